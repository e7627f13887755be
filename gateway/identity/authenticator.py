"""Entra ID access-token authentication: the one entry point the request path calls."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from typing import Any

import jwt
from jwt.exceptions import InvalidAlgorithmError, InvalidSignatureError, PyJWTError

from gateway.identity.bearer import bearer_token, require_compact_jws
from gateway.identity.cache import CachedToken, TokenCache, token_digest
from gateway.identity.claims import check_audience, check_issuer, check_lifetime, principal_from_claims
from gateway.identity.errors import AuthenticationError
from gateway.identity.keystore import KeyStore, SessionFactory
from gateway.identity.principal import Principal
from gateway.identity.settings import IdentitySettings, is_guid

ALGORITHM = "RS256"
_MAX_KID_CHARS = 256


def _segment_json(segment: bytes, what: str) -> tuple[dict[str, Any], bytes]:
    """Decode one base64url segment as a JSON object (unverified: used only to route the check)."""
    try:
        raw = base64.urlsafe_b64decode(segment + b"=" * (-len(segment) % 4))
        value = json.loads(raw)
    except (ValueError, RecursionError):
        raise AuthenticationError("malformed_token", f"The token's {what} is not base64url JSON.") from None
    if not isinstance(value, dict):
        raise AuthenticationError("malformed_token", f"The token's {what} is not a JSON object.")
    return value, raw


def _check_header(header: dict[str, Any]) -> str:
    """The ``kid``, once the header asks for nothing but RS256 with a named key."""
    alg = header.get("alg")
    if alg != ALGORITHM:
        shown = alg if isinstance(alg, str) and alg.isalnum() and len(alg) <= 16 else "an unsupported value"
        raise AuthenticationError("unsupported_alg", f"The token's alg is {shown}; only RS256 is accepted.")
    if "crit" in header or "b64" in header:
        raise AuthenticationError(
            "unsupported_crit", "The token declares critical header extensions; none are supported."
        )
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid or len(kid) > _MAX_KID_CHARS:
        raise AuthenticationError("missing_kid", "The token's header names no signing key (kid).")
    # jku, x5u, x5c and jwk are ignored: keys only ever come from the authority's published key set.
    return kid


class Authenticator:
    """Validates ``Authorization: Bearer`` Entra ID access tokens (v1 and v2), fail closed.

    Call ``await start()`` once inside the serving event loop (it returns at once; keys load in the
    background), ``ready`` for ``/readyz``, ``await authenticate(header)`` per request and
    ``await close()`` at shutdown.
    """

    def __init__(
        self,
        settings: IdentitySettings,
        session_factory: SessionFactory | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self._keys = KeyStore(settings, session_factory)
        self._cache = TokenCache(settings.token_cache_size)
        self._audiences = frozenset(settings.audiences)
        self._clock = clock
        self._jws = jwt.PyJWS(algorithms=[ALGORITHM])

    async def start(self) -> None:
        """Begin loading every allowed tenant's keys in the background; returns without waiting."""
        self._keys.start()

    async def close(self) -> None:
        await self._keys.close()

    @property
    def ready(self) -> bool:
        """Keys are loaded for every allowed tenant."""
        return self._keys.ready

    async def wait_ready(self, timeout: float) -> bool:
        """Wait at most ``timeout`` seconds for ``ready`` (for start-up scripts and tests)."""
        return await self._keys.wait_ready(timeout)

    async def authenticate(self, authorization: bytes | None) -> Principal:
        """The caller named by the raw ``Authorization`` header value, or ``AuthenticationError``."""
        token = bearer_token(authorization, self.settings.max_token_bytes)
        now = self._clock()
        digest = token_digest(token)
        cached = self._cache.get(digest, now)
        if cached is not None:
            # The same bytes passed every check before; only time and the key's publication can change.
            current = self._keys.sources[cached.tenant].current
            if current is not None and cached.kid in current.keys:
                return cached.principal
            self._cache.discard(digest)
        require_compact_jws(token)
        principal, kid = await self._verify(token, now)
        self._cache.put(digest, CachedToken(principal, principal.expires_at, principal.tenant, kid))
        return principal

    async def _verify(self, token: bytes, now: float) -> tuple[Principal, str]:
        header_segment, payload_segment, _ = token.split(b".")
        header, _ = _segment_json(header_segment, "header")
        kid = _check_header(header)
        claims, payload = _segment_json(payload_segment, "payload")
        tid = claims.get("tid")
        if not isinstance(tid, str) or not is_guid(tid):
            raise AuthenticationError("invalid_tenant", "The token's tid claim is not a tenant GUID.")
        source = self._keys.sources.get(tid)
        if source is None:
            raise AuthenticationError("tenant_not_allowed", f"Tenant {tid} is not allowed here.")
        # Refusing needs no trust in the claims, so an expired or not-yet-valid token is turned away
        # before the RSA check: a client replaying an expired token must not cost a signature each time.
        exp = check_lifetime(claims, now, self.settings.leeway_seconds)

        keys = source.current
        key = keys.keys.get(kid) if keys is not None else None
        if key is None:
            key = await source.key_after_miss(kid)
            keys = source.current
        if keys is None:
            raise AuthenticationError(
                "keys_unavailable", "The signing keys of the token's tenant could not be loaded yet."
            )
        if key is None:
            raise AuthenticationError(
                "unknown_kid", "The token's signing key (kid) is not published for its tenant."
            )

        try:
            verified = self._jws.decode_complete(token, key=key.jwk, algorithms=[ALGORITHM])
        except InvalidSignatureError:
            raise AuthenticationError("bad_signature", "The token's signature does not verify.") from None
        except InvalidAlgorithmError:
            raise AuthenticationError("unsupported_alg", "The token's alg does not match its key.") from None
        except PyJWTError:
            raise AuthenticationError("malformed_token", "The token is not a well-formed JWS.") from None
        if verified["payload"] != payload:
            raise AuthenticationError("malformed_token", "The token's payload is not canonical base64url.")

        version = check_issuer(claims, keys, key, tid)
        check_audience(claims, self._audiences)
        return principal_from_claims(claims, tid, version, exp), kid
