"""``X-Gateway-Assertion``: a short-lived JWS that tells the upstream who is calling, signed by the gateway.

The plain ``X-Gateway-*`` headers are only as good as the network that keeps everyone but the gateway
away from the upstream. The assertion makes them checkable: a compact JWS (EdDSA, Ed25519, built with
pyjwt) over ``iss``, ``aud`` (the upstream), ``iat``, ``exp`` (``upstream.assertion_ttl_seconds``,
at most 60 s), ``jti`` and ``decision_id`` (the decision id), ``use: "request"``, ``tid`` (tenant),
``sub`` (principal: oid or app id), ``principal_kind``, ``roles``, ``purpose``, ``route`` (the route
template), ``method`` and ``path`` (the request it is for) and ``masks`` (the masking plan: JSON
pointers the gateway masks in the answer). The public keys are served, without a token, at
``GET /.well-known/jwks.json``; an upstream verifies with any JOSE library (the reference services:
``gateway demo-upstream --require-assertion``, ``RequireAssertion`` below).

Keys: a key ring in one file (``upstream.assertion_key_file``, JSON, mode 0600, created if missing),
newest key signs, ``kid`` = RFC 7638 thumbprint. After ``upstream.assertion_key_rotation_hours`` a
worker adds a new key under an exclusive lock on ``<file>.lock`` and drops keys retired for longer
than an hour, so the JWKS keeps every key an unexpired assertion can name. Every worker re-reads
the file when it changed (checked at most every few seconds when signing, and on each JWKS request),
so whichever worker answers the JWKS knows the key any other worker signs with. An unknown ``kid`` at
the upstream triggers one JWKS refetch (rate-limited).

Cost: one Ed25519 signature (libsodium through PyNaCl: about 20 us on this kind of machine, 0.73x
OpenSSL's through ``cryptography``, side by side; most of the assertion) plus one orjson encoding and
two base64 passes per forwarded request
(``load/bench/test_bench_audit.py::test_bench_assertion``); the key object and the encoded JOSE header
are built once per key, not per request, and the compact form is put together here rather than by
``jwt.encode``, whose per-call checks and JSON encoder cost a third as much again. Nothing is cached
per request: each assertion names its own decision id. Fail closed: if signing raises, the request is
answered 500 (audited), never forwarded without an assertion; a key file that cannot be read stops the
gateway at start-up.

Resolver calls (tenant settings, opt-out lists, consents, record facts: ``gateway/authz/resolvers.py``)
carry an assertion too, with ``use: "resolve"``, ``sub: "gateway"``, no tenant, principal or roles,
and ``method``/``path`` of that one read. Safe because only the gateway holds the key, the assertion
is bound to one GET of one path for seconds, and an upstream that requires assertions takes the
caller's identity from the assertion only: a resolve assertion names nobody, so nothing that depends
on a caller (a mailbox, recording a consent) can be reached with it.

Limits: within its lifetime an assertion can be replayed for the same method and path by whoever
sees the traffic between gateway and upstream (use TLS there; upstreams may remember ``jti``); it
says nothing about the request body.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import json
import logging
import os
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jwt
import nacl.signing
import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.audit.signing import ALGORITHM, KeyFileError, check_private, load_pem, pem, public_jwk, thumbprint

logger = logging.getLogger("gateway.assertion")

HEADER = "X-Gateway-Assertion"
JWKS_PATH = "/.well-known/jwks.json"
TYP = "gateway-assertion+jwt"
ISSUER = "privacy-gateway"
USE_REQUEST = "request"
USE_RESOLVE = "resolve"
MAX_TTL_SECONDS = 60.0
RETIRED_KEEP_SECONDS = 3600.0
RELOAD_CHECK_SECONDS = 2.0

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


@dataclass(frozen=True)
class _Key:
    kid: str
    created: float
    key: Ed25519PrivateKey
    headers: dict[str, str]
    # the encoded JOSE header and its dot: the part of every signing input that never changes for a key
    prefix: bytes
    # The same key in libsodium (PyNaCl), which signs in about 70% of OpenSSL's time here. Ed25519 is
    # deterministic: both give the same signature for the same key and input (a property test checks).
    signer: nacl.signing.SigningKey


def _key(kid: str, created: float, key: Ed25519PrivateKey) -> _Key:
    headers = {"kid": kid, "typ": TYP}
    header = orjson.dumps({"alg": ALGORITHM, **headers})
    seed = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    return _Key(kid, created, key, headers, _b64(header) + b".", nacl.signing.SigningKey(seed))


def sign_ed25519(key: _Key, message: bytes) -> bytes:
    return key.signer.sign(message).signature


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def _read_ring(path: Path) -> list[_Key]:
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        raise KeyFileError(f"{path}: not a readable assertion key ring ({type(exc).__name__})") from None
    check_private(path)
    keys: list[_Key] = []
    for entry in document.get("keys", []) if isinstance(document, dict) else []:
        key = load_pem(str(entry.get("pem", "")).encode(), str(path))
        kid = thumbprint(key)
        keys.append(_key(kid, float(entry.get("created", 0)), key))
    return sorted(keys, key=lambda k: k.created)


def _write_ring(path: Path, keys: list[_Key]) -> None:
    document = {"keys": [{"kid": k.kid, "created": k.created, "pem": pem(k.key).decode()} for k in keys]}
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(document, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


class AssertionSigner:
    """Signs the assertions of one gateway process from the key ring in ``path``."""

    def __init__(self, path: Path, *, audience: str, ttl_seconds: float = 30.0, rotation_seconds: float = 86400.0,
                 issuer: str = ISSUER, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.audience = audience.rstrip("/")
        self.ttl = int(min(ttl_seconds, MAX_TTL_SECONDS))
        self.rotation = rotation_seconds
        self.issuer = issuer
        self.clock = clock
        self._keys: list[_Key] = []
        self._mtime = 0.0
        self._next_check = 0.0
        self.load()

    # -- keys ----------------------------------------------------------------------------------------

    def load(self) -> None:
        """Read the ring (creating it or rotating it when due); raises ``KeyFileError``."""
        keys = _read_ring(self.path)
        if not keys or self.clock() - keys[-1].created >= self.rotation:
            keys = self._rotate()
        self._keys = keys
        self._mtime = self.path.stat().st_mtime
        self._next_check = time.monotonic() + RELOAD_CHECK_SECONDS

    def _rotate(self) -> list[_Key]:
        """Add a key under the ring's lock (another worker may just have done it) and drop old ones."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock = os.open(f"{self.path}.lock", os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            keys = _read_ring(self.path)
            now = self.clock()
            if not keys or now - keys[-1].created >= self.rotation:
                fresh = Ed25519PrivateKey.generate()
                kid = thumbprint(fresh)
                keys.append(_key(kid, now, fresh))
                # a key retired (replaced) more than an hour ago signs nothing any unexpired assertion holds
                keep = [k for i, k in enumerate(keys[:-1]) if now - keys[i + 1].created < RETIRED_KEEP_SECONDS]
                keys = [*keep, keys[-1]]
                _write_ring(self.path, keys)
                logger.info("assertion signing key rotated: new kid %s", kid)
            return keys
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
            os.close(lock)

    def _refresh(self) -> None:
        self._next_check = time.monotonic() + RELOAD_CHECK_SECONDS
        try:
            mtime = self.path.stat().st_mtime
        except OSError:
            mtime = -1.0
        if mtime != self._mtime or self.clock() - self._keys[-1].created >= self.rotation:
            self.load()

    @property
    def kid(self) -> str:
        return self._keys[-1].kid

    def jwks(self) -> dict[str, Any]:
        with contextlib.suppress(KeyFileError, OSError):
            self._refresh()
        return {"keys": [public_jwk(k.key) for k in self._keys]}

    # -- signing -------------------------------------------------------------------------------------

    def _current(self) -> _Key:
        if time.monotonic() >= self._next_check:
            self._refresh()
        return self._keys[-1]

    def sign_request(self, *, tenant: str, principal: str, principal_kind: str, roles: tuple[str, ...],
                     purpose: str, decision_id: str, route: str, method: str, path: str,
                     masks: tuple[str, ...]) -> str:
        key = self._current()
        now = int(self.clock())
        claims = {
            "iss": self.issuer, "aud": self.audience, "iat": now, "exp": now + self.ttl, "jti": decision_id,
            "use": USE_REQUEST, "decision_id": decision_id, "tid": tenant, "sub": principal,
            "principal_kind": principal_kind, "roles": list(roles), "purpose": purpose, "route": route,
            "method": method, "path": path, "masks": list(masks),
        }
        return _compact(key, claims)

    def resolver_headers(self, method: str, url: str) -> dict[str, str]:
        """The assertion of one of the gateway's own reads (``aud`` = the resolver's origin)."""
        key = self._current()
        parts = urlsplit(url)
        now = int(self.clock())
        claims = {
            "iss": self.issuer, "aud": f"{parts.scheme}://{parts.netloc}", "iat": now, "exp": now + self.ttl,
            "jti": uuid.uuid4().hex, "use": USE_RESOLVE, "sub": "gateway", "method": method,
            "path": parts.path or "/",
        }
        return {HEADER: _compact(key, claims)}

    async def serve_jwks(self, send: Send) -> None:
        body = json.dumps(self.jwks()).encode()
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"application/jwk-set+json"), (b"content-length", str(len(body)).encode()),
            (b"cache-control", b"max-age=300")]})
        await send({"type": "http.response.body", "body": body, "more_body": False})


def _compact(key: _Key, claims: dict[str, Any]) -> str:
    """RFC 7515 compact serialisation. pyjwt's ``encode`` does the same with a JSON encoder and key-type
    checks per call, a third of the assertion's cost on the hot path; any JOSE library verifies this
    (the tests verify with pyjwt)."""
    signing_input = key.prefix + _b64(orjson.dumps(claims))
    return (signing_input + b"." + _b64(sign_ed25519(key, signing_input))).decode("ascii")


def assertion_key_path(configured: str, audit_path: str) -> Path:
    return Path(configured) if configured else Path(audit_path).parent / "assertion-keys.json"


# -- the upstream's side ---------------------------------------------------------------------------------


class AssertionRefused(Exception):
    pass


class AssertionVerifier:
    """Checks assertions against the gateway's JWKS (fetched with pyjwt's ``PyJWKClient`` in a thread,
    keys cached by ``kid``; an unknown ``kid`` refetches at most once per ``refetch_seconds``)."""

    def __init__(self, jwks_url: str, audience: str, *, issuer: str = ISSUER, refetch_seconds: float = 5.0,
                 leeway_seconds: float = 5.0) -> None:
        self.jwks_url = jwks_url
        self.audience = audience.rstrip("/")
        self.issuer = issuer
        self.leeway = leeway_seconds
        self._client = jwt.PyJWKClient(jwks_url, cache_keys=False, cache_jwk_set=False, timeout=5)
        self._keys: dict[str, Any] = {}
        self._refetch = refetch_seconds
        self._last_fetch = -1e9
        self._lock = asyncio.Lock()

    async def _key(self, kid: str) -> Any:
        key = self._keys.get(kid)
        if key is not None:
            return key
        async with self._lock:
            if kid not in self._keys and time.monotonic() - self._last_fetch >= self._refetch:
                self._last_fetch = time.monotonic()
                try:
                    found = await asyncio.to_thread(self._client.get_signing_keys, True)
                except jwt.PyJWKClientError as exc:
                    raise AssertionRefused(f"the gateway's keys cannot be fetched: {exc}") from None
                self._keys = {k.key_id: k.key for k in found if k.key_id}
        key = self._keys.get(kid)
        if key is None:
            raise AssertionRefused("signed with a key the gateway does not publish")
        return key

    async def verify(self, token: str, method: str, path: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError as exc:
            raise AssertionRefused(f"not a JWS: {exc}") from None
        if header.get("alg") != ALGORITHM or not isinstance(header.get("kid"), str):
            raise AssertionRefused("unexpected algorithm or no kid")
        key = await self._key(str(header["kid"]))
        try:
            claims: dict[str, Any] = jwt.decode(
                token, key, algorithms=[ALGORITHM], audience=self.audience, issuer=self.issuer, leeway=self.leeway,
                options={"require": ["exp", "iat", "iss", "aud", "jti", "method", "path", "use"]},
            )
        except jwt.InvalidTokenError as exc:
            raise AssertionRefused(str(exc)) from None
        if int(claims["exp"]) - int(claims["iat"]) > MAX_TTL_SECONDS:
            raise AssertionRefused("lives longer than 60 s")
        if claims["method"] != method or claims["path"] != path:
            raise AssertionRefused("issued for another request")
        if claims["use"] == USE_RESOLVE and method != "GET":
            raise AssertionRefused("a resolver assertion only reads")
        if claims["use"] not in (USE_REQUEST, USE_RESOLVE):
            raise AssertionRefused("unknown use")
        return claims


_IDENTITY = {b"x-gateway-tenant": "tid", b"x-gateway-principal": "sub", b"x-gateway-purpose": "purpose",
             b"x-gateway-decision-id": "decision_id"}


class RequireAssertion:
    """ASGI middleware: refuse (401) a request without a valid assertion; the ``X-Gateway-*`` identity
    headers the app reads are then replaced by the assertion's claims (none for a resolver read)."""

    def __init__(self, app: Any, verifier: AssertionVerifier, *, open_paths: frozenset[str] = frozenset({"/healthz"})):
        self.app = app
        self.verifier = verifier
        self.open_paths = open_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.open_paths:
            await self.app(scope, receive, send)
            return
        headers = list(scope.get("headers", []))
        tokens = [v for n, v in headers if n.lower() == b"x-gateway-assertion"]
        try:
            if len(tokens) != 1:
                raise AssertionRefused("missing" if not tokens else "more than one assertion")
            claims = await self.verifier.verify(tokens[0].decode("latin-1"), scope["method"], scope["path"])
        except AssertionRefused as exc:
            await _refuse(send, str(exc))
            return
        kept = [(n, v) for n, v in headers if not n.lower().startswith((b"x-gateway-", b"x_gateway_"))]
        if claims["use"] == USE_REQUEST:
            kept += [(name, str(claims.get(claim, "")).encode("latin-1")) for name, claim in _IDENTITY.items()]
        await self.app({**scope, "headers": kept}, receive, send)


async def _refuse(send: Send, reason: str) -> None:
    body = json.dumps({"type": "about:blank", "title": "Unauthorized", "status": 401,
                       "detail": f"a valid X-Gateway-Assertion from the gateway is required: {reason}"}).encode()
    await send({"type": "http.response.start", "status": 401, "headers": [
        (b"content-type", b"application/problem+json"), (b"content-length", str(len(body)).encode()),
        (b"www-authenticate", b'Bearer realm="gateway-assertion"')]})
    await send({"type": "http.response.body", "body": body, "more_body": False})
