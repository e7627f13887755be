"""Settings of the authorization component.

``PoliciesSettings`` is the ``[policies]`` configuration section: the keys an operator sets, their
defaults (the shipped policy packs and route maps) and their checks, including that the named
directories and files exist, so a typo stops ``gateway serve`` before anything listens.
``AuthzSettings`` is what ``Authorizer`` takes: the section resolved against the rest of the
configuration (``resolver_url`` "" = ``upstream.url``) plus tuning that is no configuration key
(cache sizes, review bounds, schema validation of every request in tests). Two types because the
authorizer's shape predates the section's; ``PoliciesSettings.authz`` is the one mapping.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from gateway.settings import ConfigError, check_fields, check_http_url, setting

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_POLICIES_DIR = str(PROJECT_ROOT / "policies")
ROUTE_MAPS_DIR = Path(__file__).resolve().parents[1] / "adapters"  # the shipped route maps (package data)
DEFAULT_ROUTE_MAPS: tuple[str, ...] = (str(ROUTE_MAPS_DIR / "reference.toml"), str(ROUTE_MAPS_DIR / "gmail.toml"))


@dataclass(frozen=True, slots=True)
class AuthzSettings:
    policies_dir: str | Path
    route_maps: Sequence[str | Path]
    resolver_url: str  # base URL of the service that holds tenant settings, opt-outs and consents
    resolver_ttl_seconds: float = 30.0
    resolver_timeout_seconds: float = 2.0
    resolver_cache_size: int = 4096
    decision_cache_size: int = 65536
    entity_cache_size: int = 4096  # parsed Cedar entity sets (a few KB each)
    watch: bool = True  # poll the policy files' modification times and reload on change
    watch_interval_seconds: float = 2.0
    max_lift_body_bytes: int = 65536  # upper bound on any route's max_body_bytes
    validate_requests: bool = False  # also validate every Cedar request against the schema (tests)
    max_record_reviews: int = 2048  # distinct records one answer may hold for a per-item review (else 502)
    # a candidate policy set decided beside the enforced one (shadow mode: recorded, never enforced);
    # "" = none. It uses the same route maps.
    shadow_dir: str | Path = ""


@dataclass(frozen=True)
class PoliciesSettings:
    SECTION: ClassVar[str] = "policies"

    dir: str = DEFAULT_POLICIES_DIR
    route_maps: tuple[str, ...] = DEFAULT_ROUTE_MAPS
    watch: bool = True
    watch_interval_seconds: float = setting(2.0, above=0)
    decision_cache_size: int = setting(65536, minimum=0)  # 0 = no cache
    resolver_ttl_seconds: float = setting(30.0, minimum=0)  # 0 = every decision reads the facts again
    resolver_timeout_seconds: float = setting(2.0, above=0)
    resolver_url: str = ""  # facts (tenant settings, opt-outs, consents) come from here; "" = upstream.url
    last_good_dir: str = ""  # copy of the last policy set that loaded; "" = policies.last-good beside audit.path
    # a candidate set decided beside the enforced one and recorded, never enforced; one that does not
    # load (or is missing) shows in /readyz and never stops the gateway
    shadow_dir: str = ""

    def __post_init__(self) -> None:
        check_fields(self)
        check_http_url("policies.resolver_url", self.resolver_url, empty_ok=True)
        if not Path(self.dir).is_dir():
            raise ConfigError("policies.dir", f"not a directory: {self.dir}")
        for route_map in self.route_maps:
            if not Path(route_map).is_file():
                raise ConfigError("policies.route_maps", f"file not found: {route_map}")

    def authz(self, upstream_url: str) -> AuthzSettings:
        """The authorizer's settings; facts are read from ``upstream_url`` unless ``resolver_url`` says otherwise."""
        return AuthzSettings(
            policies_dir=self.dir,
            route_maps=self.route_maps,
            resolver_url=self.resolver_url or upstream_url,
            resolver_ttl_seconds=self.resolver_ttl_seconds,
            resolver_timeout_seconds=self.resolver_timeout_seconds,
            decision_cache_size=self.decision_cache_size,
            watch=self.watch,
            watch_interval_seconds=self.watch_interval_seconds,
            shadow_dir=self.shadow_dir,
        )

    def last_good_path(self, audit_path: str) -> Path:
        return Path(self.last_good_dir) if self.last_good_dir else Path(audit_path).parent / "policies.last-good"
