"""A small Entra-compatible identity provider for development, tests, the demo and the load harness.

It serves, for any tenant GUID (and ``common`` / ``organizations``), the paths Entra serves:

- ``/{tenant}/v2.0/.well-known/openid-configuration``: issuer ``{authority}/{tenant}/v2.0``
- ``/{tenant}/.well-known/openid-configuration``: issuer ``{authority}/{tenant}/`` (the analogue of
  ``https://sts.windows.net/{tenant}/``)
- ``/{tenant}/discovery/v2.0/keys`` (keys carry an ``issuer``) and ``/{tenant}/discovery/keys``

On ``common`` the issuers hold the ``{tenantid}`` template, as at Entra. There is no sign-in and no
token endpoint: tokens come from ``mint_token`` / ``gateway token``, which sign with the same
persisted key (see ``devkeys``). ``POST /_dev/rotate`` (loopback callers only) publishes a new key
and, unless ``?activate=false``, makes it the signing key. The key ring is re-read whenever its file
changes, so ``gateway dev-idp --rotate`` in another shell takes effect at once.
"""

from __future__ import annotations

import os
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from gateway.identity.devkeys import add_key, load_key_ring
from gateway.identity.devtokens import mint_token
from gateway.identity.keyset import TENANT_TEMPLATE
from gateway.identity.settings import is_guid

__all__ = ["create_app", "mint_token"]

_MULTI_TENANT = ("common", "organizations")
_LOOPBACK = ("127.0.0.1", "::1")
_CACHE_HEADERS = {"Cache-Control": "max-age=60, private"}


def _tenant(request: Request) -> tuple[str, str] | JSONResponse:
    """The tenant path segment and the tenant as it appears in issuers (``{tenantid}`` on common)."""
    tenant = str(request.path_params["tenant"]).lower()
    if tenant in _MULTI_TENANT:
        return tenant, TENANT_TEMPLATE
    if is_guid(tenant):
        return tenant, tenant
    return JSONResponse(
        {"error": "invalid_tenant", "error_description": f"Tenant '{tenant[:64]}' not found."},
        status_code=400,
    )


def _metadata(authority: str, tenant: str, issuer_tenant: str, version: int) -> dict[str, Any]:
    v = "/v2.0" if version == 2 else ""
    return {
        "issuer": f"{authority}/{issuer_tenant}/v2.0" if version == 2 else f"{authority}/{issuer_tenant}/",
        "jwks_uri": f"{authority}/{tenant}/discovery{v}/keys",
        "authorization_endpoint": f"{authority}/{tenant}/oauth2{v}/authorize",
        "token_endpoint": f"{authority}/{tenant}/oauth2{v}/token",
        "response_types_supported": ["code", "id_token", "code id_token", "token id_token", "token"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "nbf", "tid", "oid", "ver", "name"],
        "tenant_region_scope": "dev",
        "cloud_instance_name": "dev-idp.localhost",
    }


def create_app(dev_dir: str | os.PathLike[str], *, authority: str) -> Starlette:
    """The dev IdP as an ASGI app. ``authority`` is the URL clients reach it at (it is in the issuers)."""
    authority = authority.rstrip("/")
    load_key_ring(dev_dir)  # create the key on start-up rather than on the first request

    def metadata(version: int) -> Any:
        async def endpoint(request: Request) -> JSONResponse:
            tenant = _tenant(request)
            if isinstance(tenant, JSONResponse):
                return tenant
            return JSONResponse(_metadata(authority, *tenant, version), headers=_CACHE_HEADERS)

        return endpoint

    def keys(version: int) -> Any:
        async def endpoint(request: Request) -> JSONResponse:
            tenant = _tenant(request)
            if isinstance(tenant, JSONResponse):
                return tenant
            issuer_tenant = tenant[1]
            published = []
            for key in load_key_ring(dev_dir).keys:
                issuer = None
                if version == 2:
                    issuer = f"{authority}/{key.bound_tenant or issuer_tenant}/v2.0"
                published.append(key.public_jwk(issuer))
            return JSONResponse({"keys": published}, headers=_CACHE_HEADERS)

        return endpoint

    async def rotate(request: Request) -> JSONResponse:
        if request.client is None or request.client.host not in _LOOPBACK:
            return JSONResponse({"error": "forbidden"}, status_code=403)
        activate = request.query_params.get("activate", "true").lower() not in ("0", "false", "no")
        kid = await run_in_threadpool(add_key, dev_dir, activate=activate)  # RSA key generation
        return JSONResponse({"kid": kid, "signing_kid": load_key_ring(dev_dir).signing_kid})

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    return Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/_dev/rotate", rotate, methods=["POST"]),
            Route("/{tenant}/v2.0/.well-known/openid-configuration", metadata(2)),
            Route("/{tenant}/.well-known/openid-configuration", metadata(1)),
            Route("/{tenant}/discovery/v2.0/keys", keys(2)),
            Route("/{tenant}/discovery/keys", keys(1)),
        ]
    )
