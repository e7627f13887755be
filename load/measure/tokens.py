"""Tokens for the load: minted once from the dev IdP's key ring and reused, as real clients reuse them.

``mint_token`` (gateway.identity.devtokens) signs with the key ring in a temporary dev dir; the dev IdP
process (``gateway dev-idp --dev-dir DIR``) serves the matching JWKS, which the gateway fetches and
which the harness also writes to a file for Envoy's ``jwt_authn`` (``local_jwks``). Tokens live for
two hours so that no run, soak included, outlives them.
"""

from __future__ import annotations

import json
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.demo.tenants import GATEWAY_APP_ID_URI, GATEWAY_CLIENT_ID
from gateway.identity.devtokens import issuer_for, mint_token

TOKEN_TTL_S = 7200
AUDIENCES = (GATEWAY_CLIENT_ID, GATEWAY_APP_ID_URI)


@dataclass(frozen=True)
class Caller:
    """Who calls: a user with app roles (delegated token) or an app (app-only token)."""

    tenant: str
    roles: tuple[str, ...] = ()
    user: str | None = None
    app: str | None = None
    version: int = 2

    def key(self) -> tuple[Any, ...]:
        return (self.tenant, self.roles, self.user, self.app, self.version)


@dataclass
class TokenBook:
    """One token per distinct caller, minted on first request."""

    dev_dir: Path
    authority: str
    tokens: dict[tuple[Any, ...], str] = field(default_factory=dict)

    def token(self, caller: Caller) -> str:
        key = caller.key()
        if key not in self.tokens:
            self.tokens[key] = mint_token(
                self.dev_dir,
                caller.tenant,
                user=caller.user,
                app=caller.app,
                roles=caller.roles,
                version=caller.version,
                ttl=TOKEN_TTL_S,
                authority=self.authority,
            )
        return self.tokens[key]

    def expired_token(self, caller: Caller) -> str:
        """A well-signed token whose ``exp`` has passed (a client that forgot to refresh)."""
        return mint_token(
            self.dev_dir,
            caller.tenant,
            user=caller.user,
            app=caller.app,
            roles=caller.roles,
            version=caller.version,
            ttl=-3600,
            authority=self.authority,
        )


def issuers(authority: str, tenants: tuple[str, ...]) -> list[str]:
    return [issuer_for(authority, t, v) for t in tenants for v in (2, 1)]


def fetch_jwks(authority: str, tenant: str, timeout_s: float = 5.0) -> dict[str, Any]:
    """The JWKS the dev IdP publishes for ``tenant``, found through its OpenID configuration."""
    base = authority.rstrip("/")
    with urllib.request.urlopen(f"{base}/{tenant}/v2.0/.well-known/openid-configuration", timeout=timeout_s) as r:
        jwks_uri = json.load(r)["jwks_uri"]
    with urllib.request.urlopen(jwks_uri, timeout=timeout_s) as r:
        jwks: dict[str, Any] = json.load(r)
    # Envoy's JWKS parser wants the RFC 7517 members only; Entra's extra ``issuer`` is harmless but
    # dropping unknown members keeps the file portable.
    keep = {"kty", "use", "kid", "n", "e", "alg", "x5t", "x5c"}
    jwks["keys"] = [{k: v for k, v in key.items() if k in keep} for key in jwks.get("keys", [])]
    return jwks
