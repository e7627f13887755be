"""``[identity]``: which tokens the authenticator accepts, as one immutable, checked value.

``authority`` is ``https://login.microsoftonline.com`` in production and the dev IdP's URL locally;
metadata is read from ``{authority}/{tenant}/v2.0/.well-known/openid-configuration`` and
``{authority}/{tenant}/.well-known/openid-configuration`` for each allowed tenant.

No tenant and no audience is built in: a production configuration names its own, and the demo's
come from ``gateway.demo.profile`` (what ``gateway serve`` runs without ``--config``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar

from gateway.settings import ConfigError, check_fields, check_http_url, setting

GUID_PATTERN = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def is_guid(value: str) -> bool:
    """A lower-case canonical GUID, the form Entra uses for ``tid`` and ``oid``."""
    return GUID_PATTERN.fullmatch(value) is not None


@dataclass(frozen=True)
class IdentitySettings:
    """Entra ID token validation settings."""

    SECTION: ClassVar[str] = "identity"

    authority: str = "https://login.microsoftonline.com"
    tenants: tuple[str, ...] = ()
    audiences: tuple[str, ...] = ()
    leeway_seconds: int = setting(60, minimum=0)  # clock skew allowed on exp/nbf
    max_token_bytes: int = setting(8192, minimum=1)  # checked before parsing
    refresh_interval_seconds: float = setting(3600.0, above=0)
    #: Minimum gap between key fetches triggered by an unknown ``kid`` (the contract wants a newly
    #: published key accepted within 30 s, so keep this well under that).
    unknown_kid_cooldown_seconds: float = setting(10.0, minimum=0)
    http_timeout_seconds: float = setting(5.0, above=0)
    max_metadata_bytes: int = setting(1024 * 1024, minimum=1)
    #: Verified tokens remembered (by hash) until their ``exp``; 0 disables the cache.
    token_cache_size: int = setting(10000, minimum=0)
    #: Delay before retrying a failed fetch, doubled after each failure up to ``retry_max_seconds``
    #: (and never beyond ``refresh_interval_seconds``).
    retry_min_seconds: float = setting(1.0, above=0, internal=True)
    retry_max_seconds: float = setting(60.0, above=0, internal=True)

    def __post_init__(self) -> None:
        check_fields(self)
        check_http_url("identity.authority", self.authority)
        object.__setattr__(self, "authority", self.authority.rstrip("/"))
        tenants = tuple(t.strip().lower() for t in self.tenants if t.strip())
        if not tenants:
            raise ConfigError("identity.tenants", "no tenant configured: list the Entra tenant ids (GUIDs) to accept")
        bad = [t for t in tenants if not is_guid(t)]
        if bad:
            raise ConfigError("identity.tenants", f"expected tenant GUIDs, got {', '.join(map(repr, bad))}")
        object.__setattr__(self, "tenants", tuple(dict.fromkeys(tenants)))
        audiences = tuple(a.strip() for a in self.audiences if a.strip())
        if not audiences:
            raise ConfigError("identity.audiences", "no audience configured: list the API's client id and App ID URI")
        object.__setattr__(self, "audiences", audiences)
