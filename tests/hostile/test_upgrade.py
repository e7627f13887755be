"""Upgrade requests through a real socket: the gateway ignores the upgrade and answers the request.

``Connection: upgrade`` with ``Upgrade: h2c`` or ``websocket`` used to make llhttp skip the request's
body: the upstream got the head with its ``Content-Length`` and waited for a body that never came
(15 s, then 502). Each request here must be answered completely at once (the socket read is bounded
by one second), as the plain HTTP/1.1 request it also is, with its body delivered whole, one audit
record and ``X-Decision-Id``, and its connection closed after the answer; the upgrade itself never
reaches the upstream. The design is in ``gateway/http_protocol.py``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator

import pytest

from gateway.demo.tenants import CONTOSO_TENANT as A
from tests.hostile.support import (
    SUPPORT,
    Counting,
    Ledger,
    RawReply,
    exchange,
    gateway,
    parse_replies,
    stored_decision_ids,
    stored_record,
)
from tests.support.idp import DevIdP
from tests.support.poll import wait_until
from tests.support.servers import ThreadedServer
from tests.support.stack import Stack

SEND = "/gmail/v1/users/me/messages/send"
OWN = f"/tenants/{A}/contacts/echo-1"
WITHIN = 1.0  # seconds: the bound of every socket read below (the old behaviour took 15 s)
BODY = json.dumps({"raw": "VG86IGFAZXhhbXBsZS5jb20NCg0KaGVsbG8gd29ybGQgZnJvbSB0aGUgdGVzdA"}).encode()
H2C = [("Connection", "Upgrade, HTTP2-Settings"), ("Upgrade", "h2c"), ("HTTP2-Settings", "AAMAAABkAAQCAAAAAAIAAAAA")]
WEBSOCKET = [
    ("Connection", "Upgrade"),
    ("Upgrade", "websocket"),
    ("Sec-WebSocket-Version", "13"),
    ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
]


@pytest.fixture(scope="module")
def stack(idp: DevIdP, echo: tuple[ThreadedServer, Counting], ledger: Ledger,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:  # fmt: skip
    audit = tmp_path_factory.mktemp("audit") / "audit.sqlite"
    with gateway(idp, echo[0].url, audit) as running:
        # one plain request first, so that keys, policies and the upstream pool are warm
        running.http("GET", OWN, token=running.mint(A, roles=["Support.Agent"]), purpose=SUPPORT)
        yield running
    missing = ledger.reconcile(audit)
    assert not missing, f"decisions answered but not in the audit store: {sorted(missing)[:5]}"


@pytest.fixture(scope="module")
def mail_token(stack: Stack) -> str:
    return stack.mint(A, app="mail-backend", roles=["Service.Mail"])


@pytest.fixture(scope="module")
def support_token(stack: Stack) -> str:
    return stack.mint(A, roles=["Support.Agent"])


def raw_request(method: str, target: str, token: str, purpose: str, headers: list[tuple[str, str]],
                body: bytes | None = None, *, chunks: list[bytes] | None = None) -> bytes:  # fmt: skip
    lines = [f"{method} {target} HTTP/1.1", "Host: gateway.test", f"Authorization: Bearer {token}",
             f"X-Purpose: {purpose}", *(f"{n}: {v}" for n, v in headers)]  # fmt: skip
    payload = b""
    if body is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
        payload = body
    elif chunks is not None:
        lines += ["Content-Type: application/json", "Transfer-Encoding: chunked"]
        payload = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + payload


def answered(stack: Stack, ledger: Ledger, upstream: Counting, data: bytes, requests: int = 1
             ) -> tuple[list[RawReply], list[tuple[str, dict[str, str]]]]:  # fmt: skip
    """Send, read for at most ``WITHIN`` seconds; the replies and what the upstream received."""
    mark = upstream.mark()
    raw = exchange(stack.port, data, timeout=WITHIN)
    replies = ledger.saw_raw(stack.audit_path, raw, requests)
    reached = [(s.path, dict(s.headers)) for s in upstream.proxied_since(mark)]
    return replies, reached


def assert_one_record(stack: Stack, reply: RawReply, status: int) -> None:
    decision_id = reply.header("X-Decision-Id")
    assert decision_id
    wait_until(
        lambda: decision_id in stored_decision_ids(stack.audit_path), timeout=10,
        message=f"decision {decision_id} in the audit store",
    )
    record = stored_record(stack.audit_path, decision_id)
    assert record is not None and record["status"] == status


@pytest.mark.parametrize("upgrade", ["h2c", "websocket"])
def test_an_upgrade_post_with_a_body_is_answered_at_once_with_its_body_forwarded(
    stack: Stack, ledger: Ledger, echo: tuple[ThreadedServer, Counting], mail_token: str, upgrade: str
) -> None:
    ledger.tried("upgrade request")
    headers = H2C if upgrade == "h2c" else WEBSOCKET
    data = raw_request("POST", SEND, mail_token, "essential.service", headers, BODY)
    replies, reached = answered(stack, ledger, echo[1], data)
    assert replies and replies[0].complete, "no complete answer within the bound"
    reply = replies[0]
    assert reply.status == 200, reply.body[:300]
    assert reply.header("Connection") == "close"  # an upgrade request is the last on its connection
    seen = reply.json()
    assert seen["body_size"] == len(BODY)
    assert seen["body_sha256"] == hashlib.sha256(BODY).hexdigest()
    assert [path for path, _ in reached] == [SEND]
    forwarded = reached[0][1]
    assert "upgrade" not in forwarded and "http2-settings" not in forwarded and "connection" not in forwarded
    assert forwarded["content-length"] == str(len(BODY))
    assert_one_record(stack, reply, 200)


def test_a_chunked_upgrade_body_is_decoded_and_forwarded_whole(
    stack: Stack, ledger: Ledger, echo: tuple[ThreadedServer, Counting], mail_token: str
) -> None:
    ledger.tried("upgrade request")
    chunks = [BODY[:10], BODY[10:11], BODY[11:]]
    data = raw_request("POST", SEND, mail_token, "essential.service", H2C, chunks=chunks)
    replies, reached = answered(stack, ledger, echo[1], data)
    assert replies and replies[0].status == 200, replies[0].body[:300] if replies else "no answer"
    assert replies[0].json()["body_sha256"] == hashlib.sha256(BODY).hexdigest()
    assert [path for path, _ in reached] == [SEND]


def test_a_websocket_handshake_get_is_answered_as_a_plain_get(
    stack: Stack, ledger: Ledger, echo: tuple[ThreadedServer, Counting], support_token: str
) -> None:
    """No 101 and no WebSocket: the route's ordinary answer, decided and audited like any GET."""
    ledger.tried("upgrade request")
    data = raw_request("GET", OWN, support_token, SUPPORT, WEBSOCKET)
    replies, reached = answered(stack, ledger, echo[1], data)
    assert replies and replies[0].status == 200, replies[0].body[:300] if replies else "no answer"
    assert [path for path, _ in reached] == [OWN]
    assert "upgrade" not in reached[0][1]
    assert_one_record(stack, replies[0], 200)


def test_a_refused_upgrade_request_is_refused_and_audited_like_any_other(
    stack: Stack, ledger: Ledger, echo: tuple[ThreadedServer, Counting], mail_token: str
) -> None:
    """Gmail data is never used for advertising: the policy answers, not the upgrade machinery."""
    ledger.tried("upgrade request")
    data = raw_request("POST", SEND, mail_token, "marketing.advertising", WEBSOCKET, BODY)
    replies, reached = answered(stack, ledger, echo[1], data)
    assert replies and replies[0].status == 403
    assert reached == []
    assert_one_record(stack, replies[0], 403)


def test_a_request_pipelined_behind_an_upgrade_is_not_read(
    stack: Stack, ledger: Ledger, echo: tuple[ThreadedServer, Counting], support_token: str, mail_token: str
) -> None:
    ledger.tried("upgrade request")
    first = raw_request("POST", SEND, mail_token, "essential.service", H2C, BODY)
    second = raw_request("GET", OWN, support_token, SUPPORT, [])
    mark = echo[1].mark()
    raw = exchange(stack.port, first + second, expect=2, timeout=WITHIN)
    replies = ledger.saw_raw(stack.audit_path, raw, 1)
    assert len(parse_replies(raw)) == 1 and replies[0].status == 200
    assert [s.path for s in echo[1].proxied_since(mark)] == [SEND]


@pytest.mark.parametrize(
    "framing",
    [
        [("Transfer-Encoding", "gzip, chunked")],
        [("Content-Length", "+65")],
    ],
)
def test_an_upgrade_body_whose_end_cannot_be_found_is_refused_before_the_app(
    stack: Stack, ledger: Ledger, echo: tuple[ThreadedServer, Counting], mail_token: str,
    framing: list[tuple[str, str]],
) -> None:  # fmt: skip
    ledger.tried("upgrade request")
    data = raw_request("POST", SEND, mail_token, "essential.service", H2C + framing) + BODY
    replies, reached = answered(stack, ledger, echo[1], data)
    assert reached == []
    assert replies and replies[0].status == 400
    assert replies[0].header("X-Decision-Id")
    assert replies[0].header("Content-Type") == "application/problem+json"
