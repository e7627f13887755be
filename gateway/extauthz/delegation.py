"""Delegation tokens: how the gateway's proxy listener knows a request was handed to it by a check.

A check that cannot decide a request on its headers (the route lifts fields from the JSON body, or the
upstream's answer must be masked or its record facts checked) answers 200 with a token in
``X-Gateway-Delegation``; Envoy sets it on the request and routes the request to the gateway's proxy
listener. The token is ``v1.<check decision id>.<expiry>.<mac>``, the MAC an HMAC-SHA256 over the
check's decision id, the expiry (seconds since the epoch), the method and the request target, keyed
with ``server.delegation_secret``. So a token is bound to one request's method and target, dies
within ``server.delegation_ttl_seconds``, and cannot be made without the secret, which only gateway
processes hold (never Envoy, never a client: the token travels only from the check to Envoy to the
gateway, which strips every ``X-Gateway-*`` header before forwarding).

What a valid token grants is deliberately little: the request is run through the full proxy-mode path
(authenticate, map, decide with the body, audit, forward, mask) instead of being answered as a check.
It never skips a decision, so a stolen or replayed token gets exactly what proxy mode would give the
same request. What the MAC protects is the bookkeeping: the record's ``extra`` names the check that
delegated it, and a request that claims delegation without holding one is refused and audited.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

VERSION = "v1"
MAX_TOKEN_CHARS = 256


class InvalidDelegation(Exception):
    """The token is malformed, forged, for another request, or expired; ``reason`` says which."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def new_secret() -> str:
    """A random secret for one ``gateway serve`` (shared by its workers through the environment)."""
    return secrets.token_hex(32)


class Delegation:
    def __init__(self, secret: str, ttl_seconds: float) -> None:
        self._key = secret.encode("utf-8")
        self.ttl_seconds = ttl_seconds

    def _mac(self, check_id: str, expires: int, method: str, target: str) -> str:
        message = "\n".join((VERSION, check_id, str(expires), method, target)).encode("utf-8", "surrogateescape")
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def mint(self, check_id: str, method: str, target: str, now: float) -> str:
        expires = int(now + self.ttl_seconds) + 1
        return f"{VERSION}.{check_id}.{expires}.{self._mac(check_id, expires, method, target)}"

    def verify(self, token: str, method: str, target: str, now: float) -> str:
        """The delegating check's decision id, or ``InvalidDelegation``."""
        if len(token) > MAX_TOKEN_CHARS:
            raise InvalidDelegation("malformed")
        parts = token.split(".")
        if len(parts) != 4 or parts[0] != VERSION or not parts[2].isdigit() or len(parts[2]) > 12:
            raise InvalidDelegation("malformed")
        _, check_id, expires_text, mac = parts
        expires = int(expires_text)
        if not hmac.compare_digest(mac, self._mac(check_id, expires, method, target)):
            raise InvalidDelegation("bad_mac")
        if now > expires:
            raise InvalidDelegation("expired")
        return check_id
