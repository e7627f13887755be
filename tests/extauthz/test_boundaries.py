"""What must never get through: client-sent gateway headers, forged delegations, a failed check.

Client-sent ``X-Gateway-*`` (and ``X_Gateway_*``) headers are dropped by Envoy before the check, the
route header a client sends cannot pick the upstream, a delegation the check did not give is refused
by the gateway, a check request sent straight to the gateway is answered and never forwarded, and an
Envoy that cannot reach the gateway answers 503 and forwards nothing.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.demo.tenants import CONTOSO_TENANT as A
from gateway.extauthz.delegation import Delegation
from tests.extauthz.conftest import Behind, record_of, records, running_envoy
from tests.support.servers import ThreadedServer, free_port, serve
from tests.support.stack import Reply, Stack, process_stack, raw_exchange

SUPPORT = "essential.service.operations.support"
FORGED = [
    ("X-Gateway-Principal", "someone-else"),
    ("X-Gateway-Tenant", "other-tenant"),
    ("X-Gateway-Route", "direct"),
    ("X-Gateway-Delegation", "v1.x.9999999999.00"),
    ("X-Gateway-Assertion", "forged"),
    ("X_Gateway_Principal", "underscored"),
]


def seen_headers(reply: Reply) -> list[tuple[str, str]]:
    return [(name, value) for name, value in reply.json()["headers"]]


def test_client_sent_gateway_headers_never_reach_the_upstream(echo_behind: Behind) -> None:
    token = echo_behind.client.mint(A, roles=["Support.Agent"])
    reply = echo_behind.client.http("GET", f"/tenants/{A}/payments", token=token, purpose=SUPPORT, headers=FORGED)
    assert reply.status == 200, reply.body
    headers = seen_headers(reply)
    gateway_headers = [(n, v) for n, v in headers if n.startswith("x-gateway") or n.startswith("x_gateway")]
    names = sorted(n for n, _ in gateway_headers)
    assert names == ["x-gateway-assertion", "x-gateway-decision-id", "x-gateway-principal", "x-gateway-purpose",
                     "x-gateway-tenant"]
    values = dict(gateway_headers)
    assert values["x-gateway-principal"] not in ("someone-else", "underscored")
    assert values["x-gateway-tenant"] == A
    assert values["x-gateway-decision-id"] == reply.header("X-Decision-Id")
    assert "authorization" not in dict(headers) and "x-purpose" not in dict(headers)
    assert dict(headers)["traceparent"].startswith("00-")
    record = record_of(echo_behind.gateway.audit_path, reply)
    assert json.loads(record["extra"])["mode"] == "ext-authz"


def test_a_client_route_header_cannot_skip_the_proxy_path(echo_behind: Behind) -> None:
    """contacts are masked for support: a client saying "direct" still goes through the gateway's proxy path."""
    token = echo_behind.client.mint(A, roles=["Support.Agent"])
    reply = echo_behind.client.http("GET", f"/tenants/{A}/contacts/echo-7", token=token, purpose=SUPPORT,
                                    headers=FORGED)
    assert reply.status == 200, reply.body
    headers = seen_headers(reply)
    assert "x-forwarded-host" in dict(headers)  # set by the gateway's proxy path, not by Envoy
    names = sorted(n for n, _ in headers if n.startswith("x-gateway") or n.startswith("x_gateway"))
    assert names == ["x-gateway-assertion", "x-gateway-decision-id", "x-gateway-principal", "x-gateway-purpose",
                     "x-gateway-tenant"]
    record = record_of(echo_behind.gateway.audit_path, reply)
    assert json.loads(record["extra"])["mode"] == "ext-authz-proxy"


# -- the gateway's listener, reached without Envoy ---------------------------------------------------------


def test_a_check_sent_straight_to_the_gateway_is_answered_never_forwarded(behind: Behind) -> None:
    gateway = behind.gateway
    token = gateway.mint(A, roles=["Support.Agent"])
    reply = gateway.http("GET", f"/tenants/{A}/payments", token=token, purpose=SUPPORT)
    assert reply.status == 200 and reply.body == b""  # a check answer: no data from the service
    assert reply.header("X-Gateway-Route") == "direct" and reply.header("X-Gateway-Principal")
    masked = gateway.http("GET", f"/tenants/{A}/payments/pay-a-005", token=token, purpose=SUPPORT)
    assert masked.status == 200 and masked.body == b""
    assert masked.header("X-Gateway-Route") == "gateway" and masked.header("X-Gateway-Delegation")


def refused_delegation(stack: Stack, token_value: str | list[str], path: str, **kwargs: Any) -> Reply:
    values = token_value if isinstance(token_value, list) else [token_value]
    before = len(records(stack.audit_path))
    reply = stack.http("GET", path, headers=[("X-Gateway-Delegation", v) for v in values], **kwargs)
    added = records(stack.audit_path)[before:]
    assert len(added) == 1 and added[0]["decision_id"] == reply.header("X-Decision-Id")
    return reply


@pytest.mark.parametrize("kind", ["forged", "other secret", "other path", "other method", "expired", "twice"])
def test_a_delegation_the_check_did_not_give_is_refused(behind: Behind, kind: str) -> None:
    gateway = behind.gateway
    path = f"/tenants/{A}/payments/pay-a-005"
    own: Delegation = gateway.app.delegation
    now = time.time()
    token = {
        "forged": "v1.01a2-check.9999999999." + "0" * 64,
        "other secret": Delegation("x" * 64, 10).mint("01a2-check", "GET", path, now),
        "other path": own.mint("01a2-check", "GET", f"/tenants/{A}/payments/pay-a-006", now),
        "other method": own.mint("01a2-check", "POST", path, now),
        "expired": own.mint("01a2-check", "GET", path, now - 3600),
        "twice": own.mint("01a2-check", "GET", path, now),
    }[kind]
    tokens = [token, token] if kind == "twice" else token
    reply = refused_delegation(gateway, tokens, path, token=gateway.mint(A, roles=["Support.Agent"]),
                               purpose=SUPPORT)
    assert reply.status == 403, reply.body
    assert reply.header("Content-Type") == "application/problem+json"
    assert b"card_number" not in reply.body
    (record,) = [r for r in records(gateway.audit_path) if r["decision_id"] == reply.header("X-Decision-Id")]
    assert record["reason"] == "invalid_delegation"


def test_a_valid_delegation_grants_nothing_proxy_mode_would_not(behind: Behind) -> None:
    gateway = behind.gateway
    path = f"/tenants/{A}/payments/pay-a-005"
    token = gateway.app.delegation.mint("01a2-check", "GET", path, time.time())
    unauthenticated = refused_delegation(gateway, token, path, purpose=SUPPORT)
    assert unauthenticated.status == 401
    masked = refused_delegation(gateway, token, path, token=gateway.mint(A, roles=["Support.Agent"]), purpose=SUPPORT)
    assert masked.status == 200 and masked.json()["card_number"].startswith("*")


# -- a check that fails --------------------------------------------------------------------------------------


class Counting:
    """An upstream that only counts what reaches it."""

    def __init__(self) -> None:
        self.seen = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        self.seen += 1
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})


@pytest.fixture
def counting() -> Iterator[tuple[Counting, ThreadedServer]]:
    app = Counting()
    with serve(app, lifespan="off") as server:
        yield app, server


def test_envoy_unable_to_reach_the_gateway_answers_503_and_forwards_nothing(
    behind: Behind, counting: tuple[Counting, ThreadedServer], tmp_path: Path
) -> None:
    app, upstream = counting
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with running_envoy(tmp_path, upstream.url, closed) as envoy:
        client = process_stack(behind.client.idp, envoy.port, upstream.url, tmp_path / "none.sqlite")
        token = client.mint(A, roles=["Support.Agent"])
        for path in (f"/tenants/{A}/payments", f"/tenants/{A}/payments/pay-a-005", "/healthz", "/anything"):
            reply = client.http("GET", path, token=token, purpose=SUPPORT, headers=FORGED)
            assert reply.status == 503, (path, reply.status, reply.body)
            assert reply.body != b"ok"
    assert app.seen == 0


# -- hostile check requests ------------------------------------------------------------------------------------


def test_hostile_check_requests_are_refused_clearly(behind: Behind) -> None:
    gateway = behind.gateway
    token = gateway.mint(A, roles=["Support.Agent"])
    path = f"/tenants/{A}/payments"
    cases: list[tuple[int, Reply]] = [
        (400, gateway.http("GET", path, token=token, purpose=SUPPORT, headers=[("Authorization", "Bearer x")])),
        (400, gateway.http("GET", path, token=token, purpose=SUPPORT, headers=[("X-Purpose", "sales")])),
        (401, gateway.http("GET", path, purpose=SUPPORT)),
        (400, gateway.http("GET", path, token=token)),
        (431, gateway.http("GET", path, token=token, purpose=SUPPORT, headers=[("X-Filler", "f" * 40_000)])),
        (403, gateway.http("GET", "/no/such/route", token=token, purpose=SUPPORT)),
        (403, gateway.http("GET", f"/tenants/{A}/payments/..%2f..%2fpayments", token=token, purpose=SUPPORT)),
    ]
    for status, reply in cases:
        assert reply.status == status, (status, reply.body)
        assert reply.header("Content-Type") == "application/problem+json"
        assert reply.header("X-Decision-Id")
        assert reply.header("X-Gateway-Route") is None  # a refusal never carries a route
    no_host = raw_exchange(gateway.port, f"GET {path} HTTP/1.1\r\nAuthorization: Bearer {token}\r\n"
                           f"X-Purpose: {SUPPORT}\r\nConnection: close\r\n\r\n".encode())
    assert no_host.startswith(b"HTTP/1.1 400") and b"x-decision-id" in no_host.lower()
    stored = {r["decision_id"]: r for r in records(gateway.audit_path)}
    for _, reply in cases:
        record = stored[reply.header("X-Decision-Id") or ""]
        assert record["decision"] == "deny" and json.loads(record["extra"])["mode"] == "ext-authz"


def test_hostile_requests_through_envoy_are_refused_and_not_forwarded(echo_behind: Behind) -> None:
    client = echo_behind.client
    token = client.mint(A, roles=["Support.Agent"])
    path = f"/tenants/{A}/payments"
    doubled_purpose = client.http("GET", path, token=token, purpose=SUPPORT, headers=[("X-Purpose", SUPPORT)])
    doubled_token = client.http("GET", path, token=token, purpose=SUPPORT,
                                headers=[("Authorization", f"Bearer {token}")])
    huge = client.http("GET", path, token=token, purpose=SUPPORT, headers=[("X-Filler", "f" * 40_000)])
    huge_purpose = client.http("GET", path, token=token, headers=[("X-Purpose", "p" * 20_000)])
    # Envoy joins repeated headers with commas before the check: refused all the same.
    expected = [(doubled_purpose, 400), (doubled_token, 401), (huge, 431), (huge_purpose, 400)]
    for reply, status in expected:
        assert reply.status == status, reply.body
        assert b"x-gateway-principal" not in reply.body  # the echo upstream never answered
    for reply in (doubled_purpose, doubled_token, huge_purpose):  # answered by the check: audited
        assert reply.header("Content-Type") == "application/problem+json" and reply.header("X-Decision-Id")
