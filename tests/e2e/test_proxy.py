"""The reverse proxy's mechanics, through the real gateway and a real upstream over TCP."""

from __future__ import annotations

import threading
from pathlib import Path

from gateway.demo.tenants import CONTOSO_TENANT as A
from tests.support.idp import DevIdP
from tests.support.servers import ThreadedServer, free_port
from tests.support.stack import Stack, raw_exchange, running_gateway

SUPPORT = "essential.service.operations.support"


def support_token(stack: Stack) -> str:
    return stack.mint(A, roles=["Support.Agent"])


def test_forwards_method_path_query_and_identity_headers(echo_stack: Stack) -> None:
    token = support_token(echo_stack)
    reply = echo_stack.http(
        "GET",
        f"/tenants/{A}/contacts/echo-1?b=2&a=1&a=%2F",
        token=token,
        purpose=SUPPORT,
        headers=[
            ("X-Gateway-Principal", "someone-else"),
            ("X-Gateway-Tenant", "other"),
            ("Accept", "application/json"),
            ("X-Custom", "one"),
            ("X-Custom", "two"),
            ("X-Forwarded-For", "203.0.113.7"),
        ],
    )
    assert reply.status == 200, reply.body
    seen = reply.json()
    assert seen["method"] == "GET"
    assert seen["query"] == "b=2&a=1&a=%2F"
    headers = seen["headers"]
    gateway_headers = {n: v for n, v in headers if n.startswith("x-gateway-")}
    assert gateway_headers["x-gateway-tenant"] == A
    assert gateway_headers["x-gateway-purpose"] == SUPPORT
    assert gateway_headers["x-gateway-principal"] != "someone-else"
    assert gateway_headers["x-gateway-decision-id"] == reply.header("X-Decision-Id")
    assert [n for n, _ in headers].count("x-gateway-principal") == 1
    assert [v for n, v in headers if n == "x-custom"] == ["one", "two"]
    assert dict(headers)["x-forwarded-for"] == "203.0.113.7, 127.0.0.1"
    assert dict(headers)["x-forwarded-proto"] == "http"
    assert dict(headers)["x-forwarded-host"].startswith("127.0.0.1:")
    assert "authorization" not in dict(headers)
    assert dict(headers)["traceparent"].startswith("00-")


def test_hop_by_hop_headers_dropped_both_ways(echo_stack: Stack) -> None:
    token = support_token(echo_stack)
    reply = echo_stack.http(
        "GET",
        f"/tenants/{A}/contacts/echo-2",
        token=token,
        purpose=SUPPORT,
        headers=[
            ("Connection", "keep-alive, X-Drop-Me"),
            ("X-Drop-Me", "1"),
            ("Keep-Alive", "timeout=5"),
            ("TE", "trailers"),
            ("Upgrade", "websocket"),
            ("Proxy-Authorization", "Basic eA=="),
            ("X-HTTP-Method-Override", "DELETE"),
        ],
    )
    names = {n for n, _ in reply.json()["headers"]}
    for hop in (
        "connection",
        "x-drop-me",
        "keep-alive",
        "te",
        "upgrade",
        "proxy-authorization",
        "x-http-method-override",
    ):
        assert hop not in names
    reply = echo_stack.http("GET", f"/tenants/{A}/contacts/cookies-1", token=token, purpose=SUPPORT)
    assert reply.status == 200
    assert reply.headers_named("Set-Cookie") == ["a=1; Path=/", "b=2; Path=/"]
    assert reply.header("X-Kept") == "yes"
    assert reply.header("X-Upstream-Hop") is None
    assert reply.header("Keep-Alive") is None


def test_large_response_streams_past_every_buffer_limit(echo_stack: Stack) -> None:
    # aggregated results for a legal obligation: nothing to mask, no record facts, no data subject to
    # read from the answer, so the gateway inspects nothing and the answer streams
    token = echo_stack.mint(A, roles=["Legal.Officer"])
    size = 48 * 1024 * 1024  # six times upstream.max_masked_body_bytes and server.max_body_bytes here
    reply = echo_stack.http(
        "GET", f"/tenants/{A}/surveys/big-1/results?size={size}", token=token, purpose="essential.legal_obligation",
        timeout=60,
    )
    assert reply.status == 200
    assert len(reply.body) == size


def test_large_request_body_streams_to_upstream(echo_stack: Stack) -> None:
    token = echo_stack.mint(A, app="mail-backend", roles=["Service.Mail"])
    body = bytes(range(256)) * (6 * 1024 * 4)  # 6 MiB, under the 8 MiB limit
    reply = echo_stack.http(
        "POST",
        "/gmail/v1/users/me/messages/send",
        token=token,
        purpose="essential.service",
        headers={"Content-Type": "application/octet-stream"},
        body=body,
        timeout=60,
    )
    assert reply.status == 200, reply.body
    import hashlib

    assert reply.json()["body_size"] == len(body)
    assert reply.json()["body_sha256"] == hashlib.sha256(body).hexdigest()


def test_oversized_body_is_413(echo_stack: Stack) -> None:
    token = echo_stack.mint(A, app="mail-backend", roles=["Service.Mail"])
    reply = echo_stack.http(
        "POST",
        "/gmail/v1/users/me/messages/send",
        token=token,
        purpose="essential.service",
        headers={"Content-Length": str(9 * 1024 * 1024)},
        body=b"",
        timeout=10,
    )
    assert reply.status == 413
    assert reply.header("Content-Type") == "application/problem+json"
    assert reply.header("X-Decision-Id")


def test_oversized_chunked_body_is_413(echo_stack: Stack) -> None:
    token = echo_stack.mint(A, app="mail-backend", roles=["Service.Mail"])
    chunk = b"y" * (1024 * 1024)
    framed = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(10)) + b"0\r\n\r\n"
    head = (
        f"POST /gmail/v1/users/me/messages/send HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
        "X-Purpose: essential.service\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    ).encode()
    answer = raw_exchange(echo_stack.port, head + framed, timeout=20)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]


def test_oversized_header_block_is_431(echo_stack: Stack) -> None:
    token = support_token(echo_stack)
    reply = echo_stack.http(
        "GET", f"/tenants/{A}/contacts/echo-3", token=token, purpose=SUPPORT, headers={"X-Padding": "p" * 40000}
    )
    assert reply.status == 431
    assert reply.header("X-Decision-Id")


def test_upstream_hanging_is_504(echo_stack: Stack) -> None:
    token = support_token(echo_stack)
    reply = echo_stack.http("GET", f"/tenants/{A}/contacts/hang-1?delay=10", token=token, purpose=SUPPORT)
    assert reply.status == 504
    assert reply.json()["status"] == 504
    assert reply.json()["decision_id"] == reply.header("X-Decision-Id")


def test_upstream_breaking_off_mid_body_cuts_the_connection(echo_stack: Stack) -> None:
    import http.client

    token = echo_stack.mint(A, roles=["Legal.Officer"])  # inspects nothing: the answer streams
    conn = http.client.HTTPConnection("127.0.0.1", echo_stack.port, timeout=10)
    conn.request(
        "GET",
        f"/tenants/{A}/surveys/broken-1/results",
        headers={"Authorization": f"Bearer {token}", "X-Purpose": "essential.legal_obligation"},
    )
    response = conn.getresponse()
    assert response.status == 200
    try:
        body = response.read()
    except http.client.IncompleteRead as exc:
        body = exc.partial
    assert len(body) < 10_000_000  # the client can tell the body is incomplete
    conn.close()


def test_upstream_down_is_502(idp: DevIdP, reference_upstream: ThreadedServer, tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    with running_gateway(idp, dead, tmp_path / "audit.sqlite", resolver_url=reference_upstream.url) as stack:
        reply = stack.http("GET", f"/tenants/{A}/contacts/x", token=support_token(stack), purpose=SUPPORT)
        assert reply.status == 502
        assert reply.header("Content-Type") == "application/problem+json"
        assert "unreachable" in reply.json()["detail"]


def test_concurrent_requests_share_the_pool(echo_stack: Stack) -> None:
    token = support_token(echo_stack)
    statuses: list[int] = []

    def worker() -> None:
        for i in range(10):
            statuses.append(
                echo_stack.http("GET", f"/tenants/{A}/contacts/echo-{i}", token=token, purpose=SUPPORT).status
            )

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert statuses == [200] * 80


def test_trace_context_joins_the_callers_trace_and_reaches_upstream(echo_stack: Stack) -> None:
    import contextlib
    import sqlite3
    from typing import Any

    from gateway.audit.query import show_decision
    from tests.support.poll import wait_until

    trace_id, caller_span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    reply = echo_stack.http(
        "GET",
        f"/tenants/{A}/contacts/echo-trace",
        token=support_token(echo_stack),
        purpose=SUPPORT,
        headers={"traceparent": f"00-{trace_id}-{caller_span}-00"},
    )
    forwarded = dict(reply.json()["headers"])["traceparent"]
    version, forwarded_trace, our_span, flags = forwarded.split("-")
    assert (version, forwarded_trace, flags) == ("00", trace_id, "01")  # sampled whatever the caller said
    assert our_span != caller_span
    decision_id = reply.header("X-Decision-Id")
    assert decision_id

    def stored() -> dict[str, Any] | None:
        with contextlib.closing(sqlite3.connect(f"file:{echo_stack.audit_path}?mode=ro", uri=True)) as conn:
            conn.row_factory = sqlite3.Row
            return show_decision(conn, decision_id)

    record = wait_until(stored, message=f"decision {decision_id} in the audit store")
    assert record["trace_id"] == trace_id
    assert record["span_id"] == our_span
    assert record["parent_span_id"] == caller_span
