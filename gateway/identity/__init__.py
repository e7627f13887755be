"""Entra ID (Azure AD) access-token authentication, and the local Entra-compatible dev IdP.

Design
------
``Authenticator.authenticate(header)`` turns the raw ``Authorization`` header into a ``Principal`` or
raises ``AuthenticationError(reason, description)``; nothing else in the gateway looks at tokens.
Checks run cheapest first and every failure denies:

1. header and token size (before any parsing), ``Bearer`` scheme, exactly one token (``bearer``);
2. the verified-token cache (SHA-256 of the token -> Principal, until ``exp`` and never past it, and
   only while the verifying ``kid`` is still published) (``cache``);
3. three base64url segments; unverified header: ``alg`` exactly RS256, no ``crit``, a ``kid``
   (``jku``/``x5u``/``x5c``/``jwk`` are never used); unverified ``tid``: a GUID among the allowed
   tenants. These only pick the key;
4. the key by ``kid`` from that tenant's published set, the signature by pyjwt (``authenticator``);
5. ``ver``; ``iss`` equal to the discovery document's issuer for that version with ``{tenantid}`` = the
   token's ``tid``; the key's own ``issuer`` binding (which pyjwt ignores); ``aud``; ``exp``/``iat``
   required, ``nbf`` optional, with leeway; ``scp`` or ``roles`` present (``claims``). Non-empty ``scp``
   makes a user (``oid``); ``roles`` without ``scp`` make an app (``azp``/``appid``) only if the token is
   app-only (``idtyp=app``, or, without that optional claim, ``oid == sub``).

Issuers are never hard-coded: they come from ``{authority}/{tenant}/v2.0/.well-known/openid-configuration``
and ``{authority}/{tenant}/.well-known/openid-configuration``, so Entra (``https://sts.windows.net/{tid}/``
for v1) and the dev IdP (``{authority}/{tid}/`` for v1) go through the same code.

Keys (``keystore``, ``fetch``, ``keyset``) are fetched with aiohttp, never blocking the loop: bounded
bodies (``max_metadata_bytes``) and time (``http_timeout_seconds``), no redirects, key sets only from
the authority's own origin, one fetch per tenant in flight, a periodic refresh, a refresh on an unknown
``kid`` at most once per cooldown. A failed or garbled fetch keeps the last good set (and is logged);
keys are only ever dropped by a successful fetch that no longer lists them.

What it never does: log or echo a token, follow ``jku``/``x5u``, accept a non-RS256 alg, accept an
unverified claim for anything but choosing the key, wait for keys longer than the fetch timeout.
Trade-offs: the cache is FIFO (an LRU reorder would cost every hit); a revoked key stops its cached
tokens only at the next key refresh.

Development (``devkeys``, ``devtokens``, ``devidp``, ``commands``): ``gateway dev-idp`` serves Entra's
discovery and key paths for any tenant from a key persisted in ``<dev-dir>/idp/``; ``gateway token`` and
``mint_token`` sign tokens with that key without a running IdP.
"""

from gateway.identity.authenticator import Authenticator
from gateway.identity.bearer import www_authenticate
from gateway.identity.errors import AuthenticationError
from gateway.identity.principal import Principal
from gateway.identity.settings import IdentitySettings

__all__ = ["AuthenticationError", "Authenticator", "IdentitySettings", "Principal", "www_authenticate"]
