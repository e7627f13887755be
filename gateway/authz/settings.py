"""Settings of the authorization component (the lead maps ``[policies]`` config keys onto these)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


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
