"""What the authenticator needs to know, as one immutable value (the lead maps ``identity.*`` onto it)."""

from __future__ import annotations

import re
from dataclasses import dataclass

GUID_PATTERN = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def is_guid(value: str) -> bool:
    """A lower-case canonical GUID, the form Entra uses for ``tid`` and ``oid``."""
    return GUID_PATTERN.fullmatch(value) is not None


@dataclass(frozen=True)
class IdentitySettings:
    """Entra ID token validation settings.

    ``authority`` is ``https://login.microsoftonline.com`` in production and the dev IdP's URL locally;
    metadata is read from ``{authority}/{tenant}/v2.0/.well-known/openid-configuration`` and
    ``{authority}/{tenant}/.well-known/openid-configuration`` for each allowed tenant.
    """

    authority: str
    tenants: tuple[str, ...]
    audiences: tuple[str, ...]
    leeway_seconds: int = 60
    max_token_bytes: int = 8192
    refresh_interval_seconds: float = 3600
    #: Minimum gap between key fetches triggered by an unknown ``kid`` (the contract wants a newly
    #: published key accepted within 30 s, so keep this well under that).
    unknown_kid_cooldown_seconds: float = 10
    http_timeout_seconds: float = 5
    max_metadata_bytes: int = 1024 * 1024
    #: Verified tokens remembered (by hash) until their ``exp``; 0 disables the cache.
    token_cache_size: int = 10000
    #: Delay before retrying a failed fetch, doubled after each failure up to ``retry_max_seconds``
    #: (and never beyond ``refresh_interval_seconds``).
    retry_min_seconds: float = 1.0
    retry_max_seconds: float = 60.0

    def __post_init__(self) -> None:
        authority = self.authority.rstrip("/")
        if not authority.startswith(("https://", "http://")):
            raise ValueError(f"identity.authority must be an http(s) URL, got {self.authority!r}")
        object.__setattr__(self, "authority", authority)
        tenants = tuple(t.strip().lower() for t in self.tenants if t.strip())
        if not tenants:
            raise ValueError("identity.tenants must list at least one tenant id")
        bad = [t for t in tenants if not is_guid(t)]
        if bad:
            raise ValueError(f"identity.tenants must be tenant GUIDs, not {bad!r}")
        object.__setattr__(self, "tenants", tuple(dict.fromkeys(tenants)))
        audiences = tuple(a.strip() for a in self.audiences if a.strip())
        if not audiences:
            raise ValueError("identity.audiences must list at least one accepted audience")
        object.__setattr__(self, "audiences", audiences)
        if self.max_token_bytes <= 0 or self.max_metadata_bytes <= 0:
            raise ValueError("identity size limits must be positive")
        if self.leeway_seconds < 0 or self.token_cache_size < 0:
            raise ValueError("identity.leeway_seconds and identity.token_cache_size must not be negative")
        intervals = (self.refresh_interval_seconds, self.http_timeout_seconds, self.retry_min_seconds)
        if min(*intervals, self.retry_max_seconds) <= 0:
            raise ValueError("identity intervals and timeouts must be positive")
        if self.unknown_kid_cooldown_seconds < 0:
            raise ValueError("identity.unknown_kid_cooldown_seconds must not be negative")
