"""Configuration: one TOML file, overridden key by key by ``GATEWAY_<SECTION>_<KEY>`` variables.

Every section is a frozen dataclass whose field types drive parsing and validation. Loading fails
with a ``ConfigError`` naming the key (``upstream.url: ...``); the CLI prints it on one line and
exits 2. Unknown sections and keys are errors in the file and in the environment alike, so a typo
never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from gateway import shipped
from gateway.demo import tenants as fixture

ENV_PREFIX = "GATEWAY_"


class ConfigError(Exception):
    """A configuration problem, worded for one line of output."""


@dataclass(frozen=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = fixture.GATEWAY_PORT
    workers: int = 1
    max_header_bytes: int = 32 * 1024
    max_body_bytes: int = 10 * 1024 * 1024
    header_timeout_seconds: float = 10.0
    keep_alive_seconds: float = 5.0
    graceful_shutdown_seconds: float = 30.0
    max_connections: int = 4096
    log_level: str = "info"
    mode: str = "proxy"  # "proxy", or "ext-authz": answer Envoy's ext_authz checks (gateway/extauthz/)
    delegation_secret: str = ""  # ext-authz: HMAC key of delegation tokens; "" = random per `gateway serve`
    delegation_ttl_seconds: float = 10.0  # ext-authz: how long a check's delegation stays valid


@dataclass(frozen=True)
class UpstreamSettings:
    url: str = f"http://127.0.0.1:{fixture.UPSTREAM_PORT}"
    connect_timeout_seconds: float = 2.0
    read_timeout_seconds: float = 30.0
    pool_size: int = 256
    forward_authorization: bool = False
    max_masked_body_bytes: int = 8 * 1024 * 1024
    # X-Gateway-Assertion (gateway/assertion.py): Ed25519 key ring (0600); "" = assertion-keys.json beside audit.path
    assertion_key_file: str = ""
    assertion_ttl_seconds: float = 30.0  # the assertion's lifetime (at most 60)
    assertion_key_rotation_hours: float = 24.0  # a new signing key after this long (the old one stays published)
    assertion_audience: str = ""  # the assertion's aud; "" = upstream.url


@dataclass(frozen=True)
class IdentityConfig:
    authority: str = f"http://127.0.0.1:{fixture.IDP_PORT}"
    tenants: tuple[str, ...] = fixture.TENANTS
    audiences: tuple[str, ...] = (fixture.GATEWAY_CLIENT_ID, fixture.GATEWAY_APP_ID_URI)
    leeway_seconds: int = 60
    max_token_bytes: int = 8192
    refresh_interval_seconds: float = 3600.0
    unknown_kid_cooldown_seconds: float = 10.0
    http_timeout_seconds: float = 5.0
    token_cache_size: int = 10000
    max_metadata_bytes: int = 1024 * 1024


@dataclass(frozen=True)
class PoliciesConfig:
    dir: str = str(shipped.policies_dir())  # a checkout's policies/, or the wheel's copy (gateway/shipped.py)
    route_maps: tuple[str, ...] = tuple(str(path) for path in shipped.route_maps())
    watch: bool = True
    watch_interval_seconds: float = 2.0
    decision_cache_size: int = 65536
    resolver_ttl_seconds: float = 30.0
    resolver_timeout_seconds: float = 2.0
    resolver_url: str = ""  # facts (tenant settings, opt-outs, consents) come from here; "" = upstream.url
    last_good_dir: str = ""  # copy of the last policy set that loaded; "" = policies.last-good beside audit.path
    shadow_dir: str = ""  # a candidate set decided beside the enforced one and recorded, never enforced


@dataclass(frozen=True)
class AuditConfig:
    path: str = "var/audit.sqlite"
    mode: str = "async"
    queue_size: int = 10000
    batch_size: int = 512
    fail_closed: bool = True
    otlp_endpoint: str = ""
    export_interval_seconds: float = 1.0
    export_batch_size: int = 512
    retention_days: int = 400
    service_name: str = "privacy-gateway"
    gateway_id: str = ""  # names this writer in the store; "" = {hostname}-{pid}
    busy_timeout_seconds: float = 5.0
    otlp_timeout_seconds: float = 10.0
    export_max_backoff_seconds: float = 30.0
    pseudonym_key_file: str = ""  # key of the store's pseudonyms; "" = <audit.path>.pseudonym-key
    signing_key_file: str = ""  # audit key (Ed25519, 0600): checkpoints, purge markers; "" = <audit.path>.signing-key
    checkpoint_interval_seconds: float = 60.0  # longest time between two signed checkpoints while writing


@dataclass(frozen=True)
class Config:
    server: ServerSettings = field(default_factory=ServerSettings)
    upstream: UpstreamSettings = field(default_factory=UpstreamSettings)
    identity: IdentityConfig = field(default_factory=IdentityConfig)
    policies: PoliciesConfig = field(default_factory=PoliciesConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)
    source: str = "built-in defaults"


SECTIONS: dict[str, type[Any]] = {
    "server": ServerSettings,
    "upstream": UpstreamSettings,
    "identity": IdentityConfig,
    "policies": PoliciesConfig,
    "audit": AuditConfig,
}


def load_config(path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Defaults, then the TOML file (if any), then ``GATEWAY_*`` variables; validated as a whole."""
    env = os.environ if environ is None else environ
    raw: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
    source = "built-in defaults"
    if path is not None:
        source = str(path)
        raw_file = _read_toml(Path(path))
        for section, values in raw_file.items():
            if section not in SECTIONS:
                raise ConfigError(f"{section}: unknown section in {path}")
            if not isinstance(values, dict):
                raise ConfigError(f"{section}: expected a table")
            raw[section].update(values)
    env_values = _environment_overrides(env)
    for section, values in env_values.items():
        raw[section].update(values)
    built: dict[str, Any] = {}
    for section, cls in SECTIONS.items():
        built[section] = _build_section(section, cls, raw[section], from_env=set(env_values.get(section, {})))
    config = Config(**built, source=source)
    _check_semantics(config)
    return config


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"--config: file not found: {path}") from None
    except OSError as exc:
        raise ConfigError(f"--config: cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"--config: {path} is not valid TOML: {exc}") from None


def _environment_overrides(env: Mapping[str, str]) -> dict[str, dict[str, str]]:
    overrides: dict[str, dict[str, str]] = {}
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX):
            continue
        rest = name[len(ENV_PREFIX):].lower()
        section, _, key = rest.partition("_")
        if section not in SECTIONS or not key:
            raise ConfigError(f"{name}: unknown configuration variable (expected GATEWAY_<SECTION>_<KEY>)")
        overrides.setdefault(section, {})[key] = value
    return overrides


def _build_section(section: str, cls: type[Any], values: dict[str, Any], from_env: set[str]) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        if key not in known:
            raise ConfigError(f"{section}.{key}: unknown key")
        kwargs[key] = _coerce(f"{section}.{key}", hints[key], value, key in from_env)
    return cls(**kwargs)


def _coerce(name: str, annotation: Any, value: Any, from_env: bool) -> Any:
    origin = typing.get_origin(annotation)
    if origin is tuple:
        if from_env:
            items: list[Any] = [part.strip() for part in str(value).split(",") if part.strip()]
        elif isinstance(value, list):
            items = value
        else:
            raise ConfigError(f"{name}: expected a list, got {_kind(value)}")
        for item in items:
            if not isinstance(item, str):
                raise ConfigError(f"{name}: expected a list of strings, got an item of type {_kind(item)}")
        return tuple(items)
    if annotation is bool:
        if from_env:
            lowered = str(value).strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ConfigError(f"{name}: expected a boolean (true/false), got {value!r}")
        if not isinstance(value, bool):
            raise ConfigError(f"{name}: expected a boolean, got {_kind(value)}")
        return value
    if annotation is int:
        if from_env:
            try:
                return int(str(value).strip())
            except ValueError:
                raise ConfigError(f"{name}: expected an integer, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name}: expected an integer, got {_kind(value)}")
        return value
    if annotation is float:
        if from_env:
            try:
                return float(str(value).strip())
            except ValueError:
                raise ConfigError(f"{name}: expected a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{name}: expected a number, got {_kind(value)}")
        return float(value)
    if annotation is str:
        if not from_env and not isinstance(value, str):
            raise ConfigError(f"{name}: expected a string, got {_kind(value)}")
        return str(value)
    raise ConfigError(f"{name}: unsupported type {annotation!r}")  # pragma: no cover - schema bug


def _kind(value: Any) -> str:
    return {
        bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list", dict: "a table",
    }.get(type(value), type(value).__name__)


def _check_semantics(config: Config) -> None:
    for name, url in (("upstream.url", config.upstream.url), ("identity.authority", config.identity.authority)):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"{name}: expected an http(s) URL, got {url!r}")
    if config.policies.resolver_url:
        parts = urlsplit(config.policies.resolver_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"policies.resolver_url: expected an http(s) URL, got {config.policies.resolver_url!r}")
    positive = {
        "server.port": config.server.port,
        "server.workers": config.server.workers,
        "server.max_header_bytes": config.server.max_header_bytes,
        "server.max_body_bytes": config.server.max_body_bytes,
        "upstream.pool_size": config.upstream.pool_size,
        "identity.max_token_bytes": config.identity.max_token_bytes,
        "audit.queue_size": config.audit.queue_size,
        "audit.batch_size": config.audit.batch_size,
    }
    for name, number in positive.items():
        if number <= 0:
            raise ConfigError(f"{name}: must be positive, got {number}")
    if not 0 < config.server.port < 65536:
        raise ConfigError(f"server.port: not a TCP port: {config.server.port}")
    for name, seconds in (
        ("upstream.connect_timeout_seconds", config.upstream.connect_timeout_seconds),
        ("upstream.read_timeout_seconds", config.upstream.read_timeout_seconds),
        ("server.header_timeout_seconds", config.server.header_timeout_seconds),
    ):
        if seconds <= 0:
            raise ConfigError(f"{name}: must be positive, got {seconds}")
    if config.server.mode not in ("proxy", "ext-authz"):
        raise ConfigError(f"server.mode: expected 'proxy' or 'ext-authz', got {config.server.mode!r}")
    if config.server.delegation_secret and len(config.server.delegation_secret) < 32:
        raise ConfigError("server.delegation_secret: at least 32 characters (or empty for a random one)")
    if config.server.delegation_ttl_seconds <= 0:
        ttl = config.server.delegation_ttl_seconds
        raise ConfigError(f"server.delegation_ttl_seconds: must be positive, got {ttl}")
    if config.audit.mode not in ("async", "durable"):
        raise ConfigError(f"audit.mode: expected 'async' or 'durable', got {config.audit.mode!r}")
    if config.audit.checkpoint_interval_seconds < 0:
        raise ConfigError("audit.checkpoint_interval_seconds: must not be negative")
    if not 0 < config.upstream.assertion_ttl_seconds <= 60:
        ttl = config.upstream.assertion_ttl_seconds
        raise ConfigError(f"upstream.assertion_ttl_seconds: more than 0 and at most 60, got {ttl}")
    if config.upstream.assertion_key_rotation_hours <= 0:
        raise ConfigError("upstream.assertion_key_rotation_hours: must be positive")
    if not config.identity.tenants:
        raise ConfigError("identity.tenants: at least one tenant id is required")
    if not config.identity.audiences:
        raise ConfigError("identity.audiences: at least one audience is required")
    policies_dir = Path(config.policies.dir)
    if not policies_dir.is_dir():
        raise ConfigError(f"policies.dir: not a directory: {policies_dir}")
    for route_map in config.policies.route_maps:
        if not Path(route_map).is_file():
            raise ConfigError(f"policies.route_maps: file not found: {route_map}")
