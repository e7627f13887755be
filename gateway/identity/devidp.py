"""A small Entra-compatible identity provider for development, tests, the demo and the load harness.

It serves, for any tenant GUID (and ``common`` / ``organizations``), the paths Entra serves:

- ``/{tenant}/v2.0/.well-known/openid-configuration``: issuer ``{authority}/{tenant}/v2.0``
- ``/{tenant}/.well-known/openid-configuration``: issuer ``{authority}/{tenant}/`` (the analogue of
  ``https://sts.windows.net/{tenant}/``)
- ``/{tenant}/discovery/v2.0/keys`` (keys carry an ``issuer``) and ``/{tenant}/discovery/keys``
- ``POST /{tenant}/oauth2/v2.0/token`` (and v1's ``/{tenant}/oauth2/token``): the client credentials
  grant, for the apps registered in the dev dir (``devapps``), authenticated by ``client_secret`` or
  by a ``client_assertion`` (a JWT signed with a registered certificate, as MSAL makes from a
  certificate credential); ``scope`` is ``{the gateway API's App ID URI or client id}/.default`` (v1:
  ``resource``). The answer is Entra's (``token_type``, ``expires_in``, ``ext_expires_in``,
  ``access_token``) and so are refusals (``error``, ``error_description`` with an AADSTS code,
  ``error_codes``, ``timestamp``, ``trace_id``, ``correlation_id``). The token is an app-only token
  with the app's registered roles, exactly what ``gateway token --app NAME --roles ...`` mints.
- ``/common/discovery/instance``: Entra's instance discovery, so MSAL may be pointed at it
  (``instance_discovery=<that URL>``) rather than told to skip it (``instance_discovery=False``).
- ``/{tenant}/oauth2/v2.0/authorize``: there is no interactive sign-in; it answers 400 saying so.

On ``common`` the issuers hold the ``{tenantid}`` template, as at Entra. Delegated (user) tokens
come from ``mint_token`` / ``gateway token``, which sign with the same persisted key (see
``devkeys``). ``POST /_dev/rotate`` (loopback callers only) publishes a new key and, unless
``?activate=false``, makes it the signing key. The key ring is re-read whenever its file changes,
so ``gateway dev-idp --rotate`` in another shell takes effect at once.

Two doors, one issuer. MSAL accepts only an https authority, while the gateway, the tests and the
demo reach the IdP over plain http on loopback (``identity.authority``). The app can therefore be
served on an http door (the ``authority``, which is also the issuer base, as today) and an https
door (``https_authority``, with the dev CA's certificate: ``devtls``). The issuer of every token and
metadata document is the authority's whichever door answered, as at Entra, where the issuer
(``sts.windows.net`` for v1) need not be the host a client asked. ``jwks_uri`` names the door the
metadata was asked on; ``token_endpoint`` and ``authorization_endpoint`` name the https door when
there is one (a client secret should not travel in clear), else the http one.
"""

from __future__ import annotations

import datetime
import os
import uuid
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import jwt
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from gateway.demo.tenants import GATEWAY_APP_ID_URI, GATEWAY_CLIENT_ID
from gateway.identity.devapps import DevApp, find_app
from gateway.identity.devkeys import add_key, load_key_ring
from gateway.identity.devtokens import mint_token
from gateway.identity.keyset import TENANT_TEMPLATE
from gateway.identity.settings import is_guid

__all__ = ["create_app", "mint_token"]

_MULTI_TENANT = ("common", "organizations")
_LOOPBACK = ("127.0.0.1", "::1")
_CACHE_HEADERS = {"Cache-Control": "max-age=60, private"}
_NO_STORE = {"Cache-Control": "no-store, no-cache", "Pragma": "no-cache"}
TOKEN_LIFETIME_SECONDS = 3599  # what Entra answers for app-only tokens, give or take its jitter
MAX_TOKEN_REQUEST_BYTES = 16 * 1024
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
#: The APIs whose tokens the dev IdP issues: the gateway's, by App ID URI or client id.
RESOURCES = (GATEWAY_APP_ID_URI, GATEWAY_CLIENT_ID)


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


def _metadata(
    authority: str, tenant: str, issuer_tenant: str, version: int, *, door: str | None = None,
    endpoints: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    """``door``: the base URL the document was asked on; ``endpoints``: where the token endpoint is."""
    v = "/v2.0" if version == 2 else ""
    door, endpoints = door or authority, endpoints or authority
    return {
        "issuer": f"{authority}/{issuer_tenant}/v2.0" if version == 2 else f"{authority}/{issuer_tenant}/",
        "jwks_uri": f"{door}/{tenant}/discovery{v}/keys",
        "authorization_endpoint": f"{endpoints}/{tenant}/oauth2{v}/authorize",
        "token_endpoint": f"{endpoints}/{tenant}/oauth2{v}/token",
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
        "response_types_supported": ["code", "id_token", "code id_token", "token id_token", "token"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "nbf", "tid", "oid", "ver", "name"],
        "tenant_region_scope": "dev",
        "cloud_instance_name": "dev-idp.localhost",
    }


class OAuthError(Exception):
    """A refusal of the token endpoint, answered in Entra's error shape."""

    def __init__(self, status: int, error: str, code: int, description: str) -> None:
        super().__init__(description)
        self.status, self.error, self.code, self.description = status, error, code, description

    def response(self) -> JSONResponse:
        trace = str(uuid.uuid4())
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        body = {
            "error": self.error,
            "error_description": f"AADSTS{self.code}: {self.description} Trace ID: {trace} Timestamp: {stamp}",
            "error_codes": [self.code],
            "timestamp": stamp,
            "trace_id": trace,
            "correlation_id": str(uuid.uuid4()),
        }
        return JSONResponse(body, status_code=self.status, headers=_NO_STORE)


def _form(body: bytes) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body; a parameter given twice is an error."""
    try:
        pairs = parse_qsl(body.decode("ascii"), keep_blank_values=True, strict_parsing=bool(body))
    except (UnicodeDecodeError, ValueError):
        raise OAuthError(400, "invalid_request", 900144, "The request body is not a valid form.") from None
    form: dict[str, str] = {}
    for name, value in pairs:
        if name in form:
            raise OAuthError(400, "invalid_request", 90014, f"The parameter '{name[:32]}' is given twice.")
        form[name] = value
    return form


def _required(form: dict[str, str], name: str) -> str:
    value = form.get(name, "").strip()
    if not value:
        raise OAuthError(
            400, "invalid_request", 900144, f"The request body must contain the following parameter: '{name}'."
        )
    return value


def _resource(form: dict[str, str], version: int) -> str:
    """The API asked for: v2 ``scope`` = ``{resource}/.default`` (alone), v1 ``resource``."""
    if version == 1:
        resource = _required(form, "resource")
    else:
        scopes = _required(form, "scope").split()
        if len(scopes) != 1 or not scopes[0].endswith("/.default"):
            raise OAuthError(
                400, "invalid_scope", 1002012,
                f"The provided value for scope {form['scope'][:200]} is not valid. Client credential flows "
                "must have a scope value with /.default suffixed to the resource identifier (application ID URI).",
            )  # fmt: skip
        resource = scopes[0][: -len("/.default")]
    if resource.rstrip("/") not in RESOURCES:
        raise OAuthError(
            400, "invalid_resource", 500011,
            f"The resource principal named {resource[:200]} was not found in the tenant. The dev IdP issues "
            f"tokens for the gateway's API only: {' or '.join(RESOURCES)}.",
        )  # fmt: skip
    return resource.rstrip("/")


def _authenticate_client(app: DevApp, form: dict[str, str], audiences: list[str]) -> None:
    secret = form.get("client_secret")
    assertion = form.get("client_assertion")
    if secret is not None and assertion is not None:
        raise OAuthError(400, "invalid_request", 90014, "Give a client secret or a client assertion, not both.")
    if secret is not None:
        if not app.secret_matches(secret):
            raise OAuthError(
                401, "invalid_client", 7000215,
                f"Invalid client secret provided. Ensure the secret being sent in the request is the client "
                f"secret value, not the client secret ID, for a secret added to app '{app.client_id}'.",
            )  # fmt: skip
        return
    if assertion is None:
        raise OAuthError(
            401, "invalid_client", 7000218,
            "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
        )  # fmt: skip
    if form.get("client_assertion_type") != JWT_BEARER:
        raise OAuthError(400, "invalid_request", 50027, f"client_assertion_type must be {JWT_BEARER}.")
    try:
        header = jwt.get_unverified_header(assertion)
    except jwt.PyJWTError:
        raise OAuthError(401, "invalid_client", 50027, "The client assertion is not a valid JWT.") from None
    x5t, x5t_s256 = header.get("x5t"), header.get("x5t#S256")
    certificate = app.certificate(  # thumbprints come padded or not (MSAL pads): compare them unpadded
        x5t.rstrip("=") if isinstance(x5t, str) else None,
        x5t_s256.rstrip("=") if isinstance(x5t_s256, str) else None,
    )
    if certificate is None:
        raise OAuthError(
            401, "invalid_client", 700027,
            f"The certificate with identifier used to sign the client assertion is not registered on application "
            f"'{app.client_id}'.",
        )  # fmt: skip
    try:
        claims = jwt.decode(
            assertion, certificate.public_key(),  # type: ignore[arg-type]
            algorithms=["RS256", "PS256", "ES256"], audience=audiences, issuer=app.client_id, leeway=60,
            options={"require": ["exp", "aud", "iss", "sub"]},
        )  # fmt: skip
    except jwt.PyJWTError as exc:
        raise OAuthError(401, "invalid_client", 700027, f"Client assertion failed validation: {exc}.") from None
    if claims.get("sub") != app.client_id:
        raise OAuthError(401, "invalid_client", 700023, "The client assertion's sub must be the client id.")


def create_app(
    dev_dir: str | os.PathLike[str], *, authority: str, https_authority: str | None = None
) -> Starlette:
    """The dev IdP as an ASGI app. ``authority`` is the URL clients reach it at (it is in the issuers);
    ``https_authority``, when it is also served over https, the URL of that door (see the docstring)."""
    authority = authority.rstrip("/")
    https = https_authority.rstrip("/") if https_authority else None
    endpoints = https or authority
    load_key_ring(dev_dir)  # create the key on start-up rather than on the first request

    def door(request: Request) -> str:
        """The base URL of the door this request came in by."""
        if https is not None and request.url.scheme == "https":
            return https
        return authority

    def metadata(version: int) -> Any:
        async def endpoint(request: Request) -> JSONResponse:
            tenant = _tenant(request)
            if isinstance(tenant, JSONResponse):
                return tenant
            document = _metadata(authority, *tenant, version, door=door(request), endpoints=endpoints)
            return JSONResponse(document, headers=_CACHE_HEADERS)

        return endpoint

    def token(version: int) -> Any:
        v = "/v2.0" if version == 2 else ""

        async def endpoint(request: Request) -> JSONResponse:
            try:
                return await issue(request, version, v)
            except OAuthError as refusal:
                return refusal.response()

        return endpoint

    async def issue(request: Request, version: int, v: str) -> JSONResponse:
        tenant = str(request.path_params["tenant"]).lower()
        if not is_guid(tenant):
            raise OAuthError(
                400, "invalid_request", 90002 if tenant not in _MULTI_TENANT else 7000214,
                f"Tenant '{tenant[:64]}' not found: app-only tokens are issued on a tenant id's authority.",
            )  # fmt: skip
        if not request.headers.get("content-type", "").lower().startswith("application/x-www-form-urlencoded"):
            raise OAuthError(400, "invalid_request", 900144, "The request body must be form-urlencoded.")
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_TOKEN_REQUEST_BYTES:
                raise OAuthError(400, "invalid_request", 900144, "The request body is too large.")
        form = _form(body)
        basic = request.headers.get("authorization", "")
        if basic.lower().startswith("basic "):
            form = {**form, **_basic_credentials(basic[6:])}
        grant = _required(form, "grant_type")
        if grant != "client_credentials":
            raise OAuthError(
                400, "unsupported_grant_type", 70003,
                f"The app requested an unsupported grant type '{grant[:64]}': the dev IdP serves client_credentials.",
            )  # fmt: skip
        client_id = _required(form, "client_id").lower()
        app = await run_in_threadpool(find_app, dev_dir, client_id)
        if app is None or tenant not in app.tenants:
            raise OAuthError(
                400, "unauthorized_client", 700016,
                f"Application with identifier '{client_id[:64]}' was not found in the directory '{tenant}'. "
                "Register it: gateway dev-idp --register-app NAME --roles ROLE,...",
            )  # fmt: skip
        resource = _resource(form, version)
        audiences = [f"{base}/{tenant}/oauth2{v}/token" for base in dict.fromkeys((door(request), endpoints))]
        _authenticate_client(app, form, audiences)
        access_token = mint_token(
            dev_dir, tenant, app=app.client_id, roles=app.roles, version=version,
            ttl=TOKEN_LIFETIME_SECONDS, authority=authority,
            audience=resource if version == 1 else GATEWAY_CLIENT_ID,
        )  # fmt: skip
        answer: dict[str, Any] = {
            "token_type": "Bearer",
            "expires_in": TOKEN_LIFETIME_SECONDS,
            "ext_expires_in": TOKEN_LIFETIME_SECONDS,
            "access_token": access_token,
        }
        if version == 1:
            answer["resource"] = resource
        return JSONResponse(answer, headers=_NO_STORE)

    async def authorize(request: Request) -> JSONResponse:
        return OAuthError(
            400, "unsupported_response_type", 900561,
            "The dev IdP has no interactive sign-in. Services get app-only tokens with client credentials "
            "(POST to the token endpoint); delegated tokens come from `gateway token --user NAME`.",
        ).response()  # fmt: skip

    async def instance_discovery(request: Request) -> JSONResponse:
        """Entra's instance discovery: where the tenant's metadata is, for MSAL's authority check."""
        asked = urlsplit(request.query_params.get("authorization_endpoint", ""))
        segments = [s for s in asked.path.split("/") if s]
        tenant = segments[0] if segments else "common"
        base = door(request)
        host = urlsplit(base).netloc
        return JSONResponse(
            {
                "tenant_discovery_endpoint": f"{base}/{tenant}/v2.0/.well-known/openid-configuration",
                "api-version": "1.1",
                "metadata": [{"preferred_network": host, "preferred_cache": host, "aliases": [host]}],
            },
            headers=_CACHE_HEADERS,
        )

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
            Route("/common/discovery/instance", instance_discovery),
            Route("/{tenant}/oauth2/v2.0/token", token(2), methods=["POST"]),
            Route("/{tenant}/oauth2/token", token(1), methods=["POST"]),
            Route("/{tenant}/oauth2/v2.0/authorize", authorize),
            Route("/{tenant}/oauth2/authorize", authorize),
        ]
    )


def _basic_credentials(encoded: str) -> dict[str, str]:
    """``client_secret_basic``: client id and secret in the Authorization header (RFC 6749 2.3.1)."""
    import base64
    import binascii
    from urllib.parse import unquote

    try:
        client_id, _, secret = base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        raise OAuthError(400, "invalid_request", 900144, "The Authorization header is not valid Basic.") from None
    return {"client_id": unquote(client_id), "client_secret": unquote(secret)}
