"""``[upstream]``: the service behind the sidecar, how it is reached and the assertion it is sent."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from gateway.settings import check_fields, check_http_url, setting


@dataclass(frozen=True)
class UpstreamSettings:
    SECTION: ClassVar[str] = "upstream"

    url: str = "http://127.0.0.1:8081"
    connect_timeout_seconds: float = setting(2.0, above=0)  # 502 past this
    read_timeout_seconds: float = setting(30.0, above=0)  # 504 past this
    pool_size: int = setting(256, minimum=1)  # keep-alive connections
    forward_authorization: bool = False  # pass the caller's bearer token on
    max_masked_body_bytes: int = setting(8 * 1024 * 1024, minimum=1)  # larger: 502, never unmasked
    # X-Gateway-Assertion (gateway/assertion.py): Ed25519 key ring (0600); "" = assertion-keys.json beside audit.path
    assertion_key_file: str = ""
    assertion_ttl_seconds: float = setting(30.0, above=0, maximum=60)  # the contract caps its lifetime at 60 s
    assertion_key_rotation_hours: float = setting(24.0, above=0)  # the old key stays published an hour
    assertion_audience: str = ""  # the assertion's aud; "" = upstream.url

    def __post_init__(self) -> None:
        check_fields(self)
        check_http_url("upstream.url", self.url)
