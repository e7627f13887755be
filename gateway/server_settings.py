"""``[server]``: where and how ``gateway serve`` listens (uvicorn, the hardened protocol, the limits)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from gateway.settings import ConfigError, check_fields, setting

#: uvicorn's names (``uvicorn.config.LOG_LEVELS``); "trace" is its level below debug.
LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")


@dataclass(frozen=True)
class ServerSettings:
    SECTION: ClassVar[str] = "server"

    host: str = "127.0.0.1"
    port: int = setting(8080, minimum=1, maximum=65535)
    workers: int = setting(1, minimum=1)
    max_header_bytes: int = setting(32 * 1024, minimum=1)  # request head limit (431)
    max_body_bytes: int = setting(10 * 1024 * 1024, minimum=1)  # request body limit (413), counted while streaming
    header_timeout_seconds: float = setting(10.0, above=0)  # head within this (408); longest pause inside a body
    # uvicorn takes whole seconds for these two
    keep_alive_seconds: float = setting(5.0, minimum=1)
    graceful_shutdown_seconds: float = setting(30.0, minimum=0)
    max_connections: int = setting(4096, minimum=1)
    log_level: str = setting("info", choices=LOG_LEVELS)
    mode: str = setting("proxy", choices=("proxy", "ext-authz"))  # ext-authz: answer Envoy's checks (gateway/extauthz/)
    delegation_secret: str = ""  # ext-authz: HMAC key of delegation tokens; "" = random per `gateway serve`
    delegation_ttl_seconds: float = setting(10.0, above=0)  # ext-authz: how long a check's delegation stays valid

    def __post_init__(self) -> None:
        object.__setattr__(self, "log_level", self.log_level.lower())
        check_fields(self)
        if not self.host:
            raise ConfigError("server.host", "must not be empty")
        if self.delegation_secret and len(self.delegation_secret) < 32:
            raise ConfigError("server.delegation_secret", "at least 32 characters (or empty for a random one)")
