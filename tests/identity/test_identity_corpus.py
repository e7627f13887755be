"""Forged and broken tokens, each refused with its own precise reason, against keys fetched over HTTP."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway.demo.tenants import CONTOSO_TENANT, FABRIKAM_TENANT
from gateway.identity import AuthenticationError, Authenticator, www_authenticate
from gateway.identity.devkeys import load_key_ring
from gateway.identity.devtokens import issuer_for, sign_rs256, token_claims
from tests.support.idp import DevIdP


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(value: Any) -> str:
    return b64(json.dumps(value, separators=(",", ":")).encode())


def bearer(token: str) -> bytes:
    return b"Bearer " + token.encode()


@dataclass
class Forge:
    """What a forgery may use: the IdP (public keys, a valid token's claims) and an attacker key."""

    idp: DevIdP
    attacker: rsa.RSAPrivateKey
    contoso_bound_kid: str

    @property
    def kid(self) -> str:
        return self.idp.signing_kid

    def claims(self, **options: Any) -> dict[str, Any]:
        return token_claims(CONTOSO_TENANT, authority=self.idp.url, **options)

    def public_pem(self) -> bytes:
        key = load_key_ring(self.idp.dev_dir).signing_key.private_key.public_key()
        return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def alg_none(f: Forge) -> bytes:
    return bearer(f"{b64json({'alg': 'none', 'typ': 'JWT', 'kid': f.kid})}.{b64json(f.claims())}.")


def hs256_with_public_key(f: Forge) -> bytes:
    signing_input = f"{b64json({'alg': 'HS256', 'typ': 'JWT', 'kid': f.kid})}.{b64json(f.claims())}"
    mac = hmac.new(f.public_pem(), signing_input.encode(), hashlib.sha256).digest()
    return bearer(f"{signing_input}.{b64(mac)}")


def now() -> int:
    return int(time.time())


CASES: dict[str, tuple[Callable[[Forge], bytes | None], str]] = {
    "no token": (lambda f: None, "missing_token"),
    "empty header": (lambda f: b"   ", "missing_token"),
    "garbage": (lambda f: b"Bearer !!not a token at all!!", "malformed_header"),
    "garbage, one word": (lambda f: b"Bearer n0t@t0ken", "malformed_token"),
    "two segments": (lambda f: bearer(f.idp.mint().rsplit(".", 1)[0]), "malformed_token"),
    "four segments": (lambda f: bearer(f.idp.mint() + ".AAAA"), "malformed_token"),
    "base64 of garbage": (lambda f: b"Bearer AAAA.BBBB.CCCC", "malformed_token"),
    "header not an object": (
        lambda f: bearer(f"{b64json([1])}.{b64json(f.claims())}.AAAA"),
        "malformed_token",
    ),
    "wrong scheme": (lambda f: b"Basic " + f.idp.mint().encode(), "unsupported_scheme"),
    "two tokens": (lambda f: bearer(f"{f.idp.mint()} {f.idp.mint()}"), "malformed_header"),
    "alg=none": (alg_none, "unsupported_alg"),
    "alg=none with a signature": (lambda f: alg_none(f) + b"AAAA", "unsupported_alg"),
    "HS256 signed with the RSA public key": (hs256_with_public_key, "unsupported_alg"),
    "RS512 claimed": (
        lambda f: bearer(f.idp.mint(extra_headers={"alg": "RS512"})),
        "unsupported_alg",
    ),
    "valid kid signed by another key": (
        lambda f: bearer(sign_rs256({"alg": "RS256", "typ": "JWT", "kid": f.kid}, f.claims(), f.attacker)),
        "bad_signature",
    ),
    "payload altered after signing": (
        lambda f: bearer(
            ".".join(
                (lambda parts: [parts[0], b64json({**f.claims(), "roles": ["Legal.Officer"]}), parts[2]])(
                    f.idp.mint().split(".")
                )
            )
        ),
        "bad_signature",
    ),
    "embedded jwk header with the attacker's key": (
        lambda f: bearer(
            sign_rs256(
                {
                    "alg": "RS256",
                    "kid": f.kid,
                    "jwk": {
                        "kty": "RSA",
                        "n": b64(f.attacker.public_key().public_numbers().n.to_bytes(256, "big")),
                        "e": "AQAB",
                    },
                },
                f.claims(),
                f.attacker,
            )
        ),
        "bad_signature",
    ),
    "unknown kid": (
        lambda f: bearer(sign_rs256({"alg": "RS256", "kid": "attacker-kid"}, f.claims(), f.attacker)),
        "unknown_kid",
    ),
    "unknown kid with jku and x5u to the attacker": (
        lambda f: bearer(
            sign_rs256(
                {
                    "alg": "RS256",
                    "kid": "k1",
                    "jku": "http://127.0.0.1:9/keys",
                    "x5u": "http://127.0.0.1:9/c",
                },
                f.claims(),
                f.attacker,
            )
        ),
        "unknown_kid",
    ),
    "no kid": (lambda f: bearer(f.idp.mint(extra_headers={"kid": None})), "missing_kid"),
    "expired": (
        lambda f: bearer(
            f.idp.mint(extra_claims={"iat": now() - 7200, "nbf": now() - 7200, "exp": now() - 3600})
        ),
        "expired",
    ),
    "not yet valid": (
        lambda f: bearer(f.idp.mint(extra_claims={"nbf": now() + 3600, "exp": now() + 7200})),
        "not_yet_valid",
    ),
    "issued in the future": (
        lambda f: bearer(f.idp.mint(extra_claims={"iat": now() + 3600, "exp": now() + 7200})),
        "not_yet_valid",
    ),
    "no exp": (lambda f: bearer(f.idp.mint(extra_claims={"exp": None})), "missing_claim"),
    "no iat": (lambda f: bearer(f.idp.mint(extra_claims={"iat": None})), "missing_claim"),
    "exp not a number": (lambda f: bearer(f.idp.mint(extra_claims={"exp": "tomorrow"})), "malformed_claims"),
    "wrong audience": (lambda f: bearer(f.idp.mint(audience="api://someone-else")), "invalid_audience"),
    "v1 audience not configured, v2 token": (
        lambda f: bearer(f.idp.mint(audience="00000003-0000-0000-c000-000000000000")),
        "invalid_audience",
    ),
    "wrong issuer": (
        lambda f: bearer(f.idp.mint(extra_claims={"iss": f"https://evil.example/{CONTOSO_TENANT}/v2.0"})),
        "invalid_issuer",
    ),
    "no issuer": (lambda f: bearer(f.idp.mint(extra_claims={"iss": None})), "invalid_issuer"),
    "v1 token carrying the v2 issuer": (
        lambda f: bearer(
            f.idp.mint(version=1, extra_claims={"iss": issuer_for(f.idp.url, CONTOSO_TENANT, 2)})
        ),
        "invalid_issuer",
    ),
    "issuer of one tenant with tid of another": (
        lambda f: bearer(
            f.idp.mint(FABRIKAM_TENANT, extra_claims={"iss": issuer_for(f.idp.url, CONTOSO_TENANT, 2)})
        ),
        "invalid_issuer",
    ),
    "unknown version": (lambda f: bearer(f.idp.mint(extra_claims={"ver": "3.0"})), "unsupported_version"),
    "tenant not allowed": (lambda f: bearer(f.idp.mint(str(uuid.uuid4()))), "tenant_not_allowed"),
    "tenant not a GUID": (lambda f: bearer(f.idp.mint("contoso.onmicrosoft.com")), "invalid_tenant"),
    "no tenant": (lambda f: bearer(f.idp.mint(extra_claims={"tid": None})), "invalid_tenant"),
    "key issuer bound to another tenant": (
        lambda f: bearer(f.idp.mint(FABRIKAM_TENANT, key_id=f.contoso_bound_kid)),
        "key_issuer_mismatch",
    ),
    "no scp nor roles (an ID token replayed)": (
        lambda f: bearer(f.idp.mint(extra_claims={"scp": None, "nonce": "n-0S6_WzA2Mj"})),
        "not_an_access_token",
    ),
    "app token without roles": (lambda f: bearer(f.idp.mint(app="some-daemon")), "not_an_access_token"),
    "scopes on a token that says it is app-only": (
        lambda f: bearer(f.idp.mint(extra_claims={"idtyp": "app"})),
        "inconsistent_token",
    ),
    "roles without scopes, not app-only (no idtyp, oid != sub)": (
        lambda f: bearer(f.idp.mint(roles=["Legal.Officer"], extra_claims={"scp": None})),
        "inconsistent_token",
    ),
    "roles without scopes, idtyp=user": (
        lambda f: bearer(f.idp.mint(app="crm", roles=["Service.CrmSync"], extra_claims={"idtyp": "user"})),
        "inconsistent_token",
    ),
    "delegated token without oid": (
        lambda f: bearer(f.idp.mint(extra_claims={"oid": None})),
        "missing_claim",
    ),
    "app token without azp": (
        lambda f: bearer(f.idp.mint(app="crm", roles=["Service.CrmSync"], extra_claims={"azp": None})),
        "missing_claim",
    ),
    "roles not a list": (
        lambda f: bearer(f.idp.mint(extra_claims={"roles": "Legal.Officer"})),
        "malformed_claims",
    ),
    "oversized token": (lambda f: bearer(f.idp.mint(extra_claims={"pad": "x" * 9000})), "token_too_large"),
    "oversized header of whitespace": (lambda f: b"Bearer " + b" " * 20000 + b"x", "token_too_large"),
    "unknown crit": (
        lambda f: bearer(
            f.idp.mint(
                extra_headers={"crit": ["urn:example:must-understand"], "urn:example:must-understand": 1}
            )
        ),
        "unsupported_crit",
    ),
    "b64=false (RFC 7797) declared critical": (
        lambda f: bearer(f.idp.mint(extra_headers={"b64": False, "crit": ["b64"]})),
        "unsupported_crit",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
async def test_forged_or_broken_token_is_refused_with_its_reason(
    case: str,
    authenticator: Authenticator,
    shared_idp: DevIdP,
    attacker_key: rsa.RSAPrivateKey,
    contoso_bound_kid: str,
) -> None:
    make, reason = CASES[case]
    header = make(Forge(shared_idp, attacker_key, contoso_bound_kid))
    with pytest.raises(AuthenticationError) as caught:
        await authenticator.authenticate(header)
    error = caught.value
    assert (error.reason, case) == (reason, case), error.description
    assert error.description
    challenge = www_authenticate(error)
    for word in (header or b"").split()[1:]:
        for segment in word.split(b"."):
            if len(segment) >= 8:  # no part of what the client sent comes back
                assert segment.decode() not in error.description
                assert segment not in challenge


async def test_the_valid_token_the_forgeries_start_from_passes(
    authenticator: Authenticator, shared_idp: DevIdP
) -> None:
    principal = await authenticator.authenticate(bearer(shared_idp.mint()))
    assert principal.tenant == CONTOSO_TENANT


async def test_a_refusal_is_not_cached(authenticator: Authenticator, shared_idp: DevIdP) -> None:
    """An unknown tenant's token stays refused however often it is presented."""
    header = bearer(shared_idp.mint(str(uuid.uuid4())))
    for _ in range(3):
        with pytest.raises(AuthenticationError, match="not allowed"):
            await authenticator.authenticate(header)
