"""X-Gateway-Assertion through the real gateway, in front of the reference services with
``--require-assertion``: every allowed request carries a valid assertion, the gateway's own reads still
work, and a request around the gateway (forged headers, expired, re-signed, for another request) is 401."""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.assertion import AssertionSigner, AssertionVerifier, RequireAssertion, assertion_key_path
from gateway.demo.tenants import CONTOSO_TENANT as A
from gateway.demo.upstream import create_upstream_app
from tests.support.idp import DevIdP, running_dev_idp
from tests.support.servers import ThreadedServer, serve
from tests.support.stack import Reply, Stack, running_gateway

SUPPORT = "essential.service.operations.support"


class Recording:
    """In front of the checking middleware: every assertion that reached the upstream, with its request."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.seen: list[tuple[str, str, str]] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            for name, value in scope["headers"]:
                if name.lower() == b"x-gateway-assertion":
                    self.seen.append((scope["method"], scope["path"], value.decode()))
        await self.app(scope, receive, send)


@pytest.fixture(scope="module")
def idp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevIdP]:
    with running_dev_idp(tmp_path_factory.mktemp("dev")) as server:
        yield server


@pytest.fixture(scope="module")
def guarded() -> Iterator[tuple[ThreadedServer, RequireAssertion, Recording]]:
    # the verifier is given the gateway's JWKS address once the gateway listens (below)
    checking = RequireAssertion(create_upstream_app(), None)  # type: ignore[arg-type]
    recording = Recording(checking)
    with serve(recording) as server:
        yield server, checking, recording


@pytest.fixture(scope="module")
def stack(
    idp: DevIdP, guarded: tuple[ThreadedServer, RequireAssertion, Recording], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    server, checking, _ = guarded
    audit = tmp_path_factory.mktemp("audit") / "audit.sqlite"
    with running_gateway(idp, server.url, audit) as running:
        checking.verifier = AssertionVerifier(f"{running.url}/.well-known/jwks.json", server.url)
        yield running


def direct(server: ThreadedServer, method: str, path: str, headers: dict[str, str]) -> Reply:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request(method, path, headers=headers)
        response = conn.getresponse()
        return Reply(response.status, response.getheaders(), response.read())
    finally:
        conn.close()


def jwks(stack: Stack) -> dict[str, Any]:
    reply = stack.http("GET", "/.well-known/jwks.json")
    assert reply.status == 200 and reply.header("Content-Type") == "application/jwk-set+json"
    document: dict[str, Any] = reply.json()
    return document


def decode(token: str, stack: Stack, audience: str) -> dict[str, Any]:
    keys = {k["kid"]: jwt.PyJWK(k).key for k in jwks(stack)["keys"]}
    kid = jwt.get_unverified_header(token)["kid"]
    claims: dict[str, Any] = jwt.decode(token, keys[kid], algorithms=["EdDSA"], audience=audience,
                                        issuer="privacy-gateway")
    return claims


def signer_of(stack: Stack, **options: Any) -> AssertionSigner:
    """The gateway's own key ring, as a test with access to its files would sign with it."""
    return AssertionSigner(assertion_key_path("", str(stack.audit_path)), audience=stack.upstream_url, **options)


def test_each_allowed_request_carries_a_valid_assertion(
    stack: Stack, guarded: tuple[ThreadedServer, RequireAssertion, Recording]
) -> None:
    server, _, recording = guarded
    token = stack.mint(A, roles=["Support.Agent"])
    recording.seen.clear()
    paths = [f"/tenants/{A}/contacts/ct-a-001", f"/tenants/{A}/payments/pay-a-005", f"/tenants/{A}/calls"]
    ids = []
    for path in paths:
        reply = stack.http("GET", path, token=token, purpose=SUPPORT)
        assert reply.status == 200, reply.body
        ids.append(reply.header("X-Decision-Id"))
    refused = stack.http("GET", paths[0], token=token, purpose="marketing.advertising")
    assert refused.status == 403
    requests = [(m, p, decode(t, stack, server.url)) for m, p, t in recording.seen]
    forwarded = [(m, p, c) for m, p, c in requests if c["use"] == "request"]
    assert [c["decision_id"] for _, _, c in forwarded] == ids  # one per allowed request, none for the refusal
    for (method, path, claims), expected_path in zip(forwarded, paths, strict=True):
        assert (method, path) == ("GET", expected_path) == (claims["method"], claims["path"])
        assert claims["tid"] == A and claims["roles"] == ["Support.Agent"] and claims["purpose"] == SUPPORT
        assert claims["principal_kind"] == "user" and claims["sub"] and claims["jti"] == claims["decision_id"]
        assert 0 < claims["exp"] - claims["iat"] <= 60
    assert forwarded[0][2]["route"] == "/tenants/{tid}/contacts/{id}"
    assert "/card_number" in forwarded[1][2]["masks"]  # the masking plan travels with it


def test_the_gateways_own_reads_carry_resolve_assertions(
    stack: Stack, guarded: tuple[ThreadedServer, RequireAssertion, Recording]
) -> None:
    server, _, recording = guarded
    recording.seen.clear()
    token = stack.mint(A, roles=["Support.Agent"])
    reply = stack.http("GET", f"/tenants/{A}/calls/call-a-001/transcript", token=token, purpose=SUPPORT)
    assert reply.status in (200, 403), reply.body  # decided with the tenant's settings, read from the services
    resolves = [decode(t, stack, server.url) for _, _, t in recording.seen]
    reads = [c for c in resolves if c["use"] == "resolve"]
    assert reads and all(c["sub"] == "gateway" and "tid" not in c and c["method"] == "GET" for c in reads)


def test_forged_headers_straight_to_the_services_are_refused(
    stack: Stack, guarded: tuple[ThreadedServer, RequireAssertion, Recording]
) -> None:
    server, _, _ = guarded
    forged = {"X-Gateway-Tenant": A, "X-Gateway-Principal": "someone", "X-Gateway-Purpose": SUPPORT,
              "X-Gateway-Decision-Id": "0190a0a0-0000-7000-8000-000000000000"}
    for path in (f"/tenants/{A}/contacts/ct-a-001", f"/tenants/{A}/payments/pay-a-005", "/gmail/v1/users/me/messages"):
        reply = direct(server, "GET", path, forged)
        assert reply.status == 401, (path, reply.body)
        assert "X-Gateway-Assertion" in reply.json()["detail"]
    assert direct(server, "GET", "/healthz", {}).status == 200


def test_expired_resigned_and_misdirected_assertions_are_refused(
    stack: Stack, guarded: tuple[ThreadedServer, RequireAssertion, Recording]
) -> None:
    server, _, _ = guarded
    path = f"/tenants/{A}/contacts/ct-a-001"
    fields: dict[str, Any] = {"tenant": A, "principal": "p-1", "principal_kind": "user", "roles": ("Support.Agent",),
                              "purpose": SUPPORT, "decision_id": "d-1", "route": "/tenants/{tid}/contacts/{id}",
                              "masks": ()}
    signer = signer_of(stack)
    valid = signer.sign_request(method="GET", path=path, **fields)
    assert direct(server, "GET", path, {"X-Gateway-Assertion": valid}).status == 200  # the control

    expired = signer_of(stack, clock=lambda: time.time() - 300).sign_request(method="GET", path=path, **fields)
    reply = direct(server, "GET", path, {"X-Gateway-Assertion": expired})
    assert reply.status == 401 and "expired" in reply.json()["detail"]

    # the same claims with another principal, re-signed with another key under the gateway's kid
    claims = jwt.decode(valid, options={"verify_signature": False})
    claims["sub"] = "an-intruder"
    resigned = jwt.encode(claims, Ed25519PrivateKey.generate(), algorithm="EdDSA",
                          headers={"kid": jwt.get_unverified_header(valid)["kid"]})
    assert direct(server, "GET", path, {"X-Gateway-Assertion": resigned}).status == 401
    unknown = jwt.encode(claims, Ed25519PrivateKey.generate(), algorithm="EdDSA", headers={"kid": "nope"})
    assert direct(server, "GET", path, {"X-Gateway-Assertion": unknown}).status == 401

    other = signer.sign_request(method="GET", path=f"/tenants/{A}/contacts/ct-a-002", **fields)
    assert direct(server, "GET", path, {"X-Gateway-Assertion": other}).status == 401  # issued for another path
    resolve = signer.resolver_headers("GET", f"{server.url}{path}")
    assert direct(server, "GET", path, resolve).status == 200
    assert direct(server, "POST", path + "/export", signer.resolver_headers("POST", f"{server.url}{path}/export")
                  ).status == 401  # a resolver assertion only reads


def test_the_jwks_needs_no_token_and_the_key_file_is_private(stack: Stack) -> None:
    document = jwks(stack)
    assert document["keys"] and all(k["kty"] == "OKP" and k["crv"] == "Ed25519" and "d" not in k
                                    for k in document["keys"])
    key_file = assertion_key_path("", str(stack.audit_path))
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert all(k["kid"] not in key_file.name for k in document["keys"])


def test_keys_rotate_and_the_retired_key_stays_published(tmp_path: Path) -> None:
    now = [1_000_000.0]
    signer = AssertionSigner(tmp_path / "keys.json", audience="http://up", rotation_seconds=3600,
                             clock=lambda: now[0])
    first = signer.kid
    now[0] += 3601
    signer.load()
    assert signer.kid != first
    assert {k["kid"] for k in signer.jwks()["keys"]} == {first, signer.kid}
    now[0] += 7200  # long after: the retired key no longer verifies anything unexpired
    signer.load()
    assert first not in {k["kid"] for k in signer.jwks()["keys"]}
    assert json.loads((tmp_path / "keys.json").read_text())["keys"]
