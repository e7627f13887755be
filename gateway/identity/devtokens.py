"""Tokens shaped like Entra ID's, signed with the dev IdP's key: for ``gateway token``, tests, the demo
and the load harness. Minting reads the key ring from the dev dir, so no running IdP is needed.

The encoder is written here on ``cryptography`` rather than taken from pyjwt on purpose: the
validator verifies with pyjwt, so the two sides are independent implementations, and tests get full
control of the header (``extra_headers``) to forge what pyjwt would refuse to produce.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from gateway.demo.tenants import CONTOSO_TENANT, GATEWAY_APP_ID_URI, GATEWAY_CLIENT_ID, IDP_PORT
from gateway.identity.devkeys import b64url, load_key_ring
from gateway.identity.settings import is_guid

DEFAULT_AUTHORITY = f"http://127.0.0.1:{IDP_PORT}"
_NAMESPACE = uuid.UUID("0b6c3f0e-5a43-4d55-9d0f-6c1f3e7a2b90")
#: The client application that requests delegated tokens in development (``azp`` / ``appid``).
DEV_CLIENT_ID = str(uuid.uuid5(_NAMESPACE, "dev-client"))
DEFAULT_USER = "dev-user"
DEFAULT_SCOPE = "access_as_user"


def dev_guid(*parts: str) -> str:
    """A GUID derived from names, stable across runs (so ``--user alice`` is always the same oid)."""
    return str(uuid.uuid5(_NAMESPACE, ":".join(parts)))


def issuer_for(authority: str, tenant: str, version: int) -> str:
    """The dev IdP's issuer: ``{authority}/{tid}/v2.0`` (v2) or ``{authority}/{tid}/`` (v1, the analogue
    of ``https://sts.windows.net/{tid}/``)."""
    authority = authority.rstrip("/")
    return f"{authority}/{tenant}/v2.0" if version == 2 else f"{authority}/{tenant}/"


def sign_rs256(header: Mapping[str, Any], claims: Mapping[str, Any], private_key: rsa.RSAPrivateKey) -> str:
    """A compact JWS with exactly ``header`` (``alg`` is whatever it says) signed RS256 by ``private_key``."""
    signing_input = b".".join(
        b64url(json.dumps(part, separators=(",", ":")).encode()).encode() for part in (header, claims)
    )
    signature = private_key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input.decode()}.{b64url(signature)}"


def _merge(base: dict[str, Any], extra: Mapping[str, Any] | None) -> dict[str, Any]:
    """``extra`` overrides ``base``; an extra value of None removes the member."""
    for name, value in (extra or {}).items():
        if value is None:
            base.pop(name, None)
        else:
            base[name] = value
    return base


def _identifier(value: str, *namespace: str) -> str:
    return value.lower() if is_guid(value.lower()) else dev_guid(*namespace, value)


def token_claims(
    tenant: str,
    *,
    user: str | None = None,
    app: str | None = None,
    roles: Iterable[str] = (),
    scopes: Iterable[str] = (),
    version: int = 2,
    ttl: float = 3600,
    audience: str | None = None,
    authority: str = DEFAULT_AUTHORITY,
    now: float | None = None,
) -> dict[str, Any]:
    """The claims Entra would put in an access token for this caller (see ``mint_token``)."""
    if version not in (1, 2):
        raise ValueError("version must be 1 or 2")
    if user is not None and app is not None:
        raise ValueError("a token is for a user or for an app, not both")
    roles, scopes = list(roles), list(scopes)
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {
        "aud": audience or (GATEWAY_CLIENT_ID if version == 2 else GATEWAY_APP_ID_URI),
        "iss": issuer_for(authority, tenant, version),
        "iat": issued,
        "nbf": issued,
        "exp": issued + int(ttl),
        "tid": tenant,
        "uti": b64url(os.urandom(16)),
        "ver": f"{version}.0",
    }
    client_claim = "azp" if version == 2 else "appid"
    if app is not None:
        if scopes:
            raise ValueError("an app-only token carries roles, not scopes")
        app_id = _identifier(app, "app")
        service_principal = dev_guid(tenant, "service-principal", app_id)
        claims.update(
            {client_claim: app_id, "idtyp": "app", "oid": service_principal, "sub": service_principal}
        )
        claims["azpacr" if version == 2 else "appidacr"] = "1"
    else:
        name = user or DEFAULT_USER
        oid = _identifier(name, tenant, "user")
        username = f"{name}@{tenant[:8]}.dev.example" if not is_guid(name.lower()) else f"{oid}@dev.example"
        claims.update(
            {
                client_claim: DEV_CLIENT_ID,
                "oid": oid,
                "sub": dev_guid(tenant, "sub", oid, DEV_CLIENT_ID),
                "scp": " ".join(scopes or [DEFAULT_SCOPE]),
                "name": name,
            }
        )
        claims["azpacr" if version == 2 else "appidacr"] = "0"
        if version == 2:
            claims["preferred_username"] = username
        else:
            claims.update({"upn": username, "unique_name": username, "amr": ["pwd"]})
    if roles:
        claims["roles"] = roles
    return claims


def mint_token(
    dev_dir: str | os.PathLike[str],
    tenant: str = CONTOSO_TENANT,
    *,
    user: str | None = None,
    app: str | None = None,
    roles: Iterable[str] = (),
    scopes: Iterable[str] = (),
    version: int = 2,
    ttl: float = 3600,
    audience: str | None = None,
    extra_claims: Mapping[str, Any] | None = None,
    authority: str = DEFAULT_AUTHORITY,
    extra_headers: Mapping[str, Any] | None = None,
    key_id: str | None = None,
) -> str:
    """An Entra-shaped access token signed with the dev IdP's current key (or the published key
    ``key_id``).

    Delegated (default): ``scp`` (default ``access_as_user``), ``oid`` (``user`` if it is a GUID, else a
    GUID derived from it and the tenant; ``dev-user`` when omitted). App-only (``app``): ``roles``,
    ``idtyp=app``, the app id in ``azp`` (v2) or ``appid`` (v1). ``audience`` defaults to the gateway's
    client id (v2) or App ID URI (v1). ``extra_claims`` / ``extra_headers`` override members; a value
    of None removes one.
    """
    ring = load_key_ring(dev_dir)
    key = ring.key(key_id) if key_id is not None else ring.signing_key
    claims = token_claims(
        tenant,
        user=user,
        app=app,
        roles=roles,
        scopes=scopes,
        version=version,
        ttl=ttl,
        audience=audience,
        authority=authority,
    )
    header: dict[str, Any] = {"typ": "JWT", "alg": "RS256", "kid": key.kid}
    if version == 1:
        header["x5t"] = key.kid
    return sign_rs256(_merge(header, extra_headers), _merge(claims, extra_claims), key.private_key)
