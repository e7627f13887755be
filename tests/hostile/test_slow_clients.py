"""Slow clients (slowloris and its relatives) against the hardened HTTP protocol.

The gateway here has a 1.5 s ``server.header_timeout_seconds``. The assertions are about order, not
duration: the server answers (or hangs up) before the slow client has finished, and a client that is
merely a little slow is still served. One real-socket test per behaviour, end to end through the
gateway and its audit store; the protocol's timing, exactly and in milliseconds, is tested in-process
on fake time (``tests/core/test_http_protocol.py``).
"""

from __future__ import annotations

import contextlib
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator

import pytest

from gateway.demo.tenants import CONTOSO_TENANT as A
from tests.hostile.support import (
    SUPPORT,
    Counting,
    Ledger,
    RawReply,
    gateway,
    parse_replies,
)
from tests.support.idp import DevIdP
from tests.support.poll import wait_until
from tests.support.servers import ThreadedServer
from tests.support.stack import Stack

TIMEOUT = 1.5
OWN = f"/tenants/{A}/contacts/echo-1"
SEND = "/gmail/v1/users/me/messages/send"


@pytest.fixture(scope="module")
def stack(
    idp: DevIdP, echo: tuple[ThreadedServer, Counting], reference: tuple[ThreadedServer, Counting],
    ledger: Ledger, tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    audit = tmp_path_factory.mktemp("audit") / "audit.sqlite"
    with gateway(idp, echo[0].url, audit, resolver_url=reference[0].url,
                 GATEWAY_SERVER_HEADER_TIMEOUT_SECONDS=str(TIMEOUT)) as running:  # fmt: skip
        yield running
    missing = ledger.reconcile(audit)
    assert not missing, f"decisions answered but not in the audit store: {sorted(missing)[:5]}"


def request_head(token: str) -> bytes:
    return (f"GET {OWN} HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer {token}\r\nX-Purpose: {SUPPORT}\r\n"
            "Connection: close\r\n\r\n").encode()  # fmt: skip


class Trickle:
    """Sends ``data`` a few bytes at a time with a pause between, stopping when the server answers or
    hangs up; records how much was sent and what came back."""

    def __init__(self, port: int, data: bytes, *, step: int = 1, pause: float = 0.1, deadline: float = 30.0,
                 prefix: bytes = b"") -> None:  # fmt: skip
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=deadline)
        self.prefix = prefix
        self.data = data
        self.step = step
        self.pause = pause
        self.deadline = deadline
        self.sent = 0
        self.received = b""
        self.closed_by_server = False
        self._done = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)

    def _read(self) -> None:
        end = time.monotonic() + self.deadline
        try:
            while time.monotonic() < end:
                chunk = self.sock.recv(65536)
                if not chunk:
                    self.closed_by_server = True
                    break
                self.received += chunk
        except OSError:
            self.closed_by_server = True
        finally:
            self._done.set()

    def run(self) -> Trickle:
        self._reader.start()
        if self.prefix:
            self.sock.sendall(self.prefix)
        end = time.monotonic() + self.deadline
        while self.sent < len(self.data) and not self._done.is_set() and time.monotonic() < end:
            try:
                self.sock.sendall(self.data[self.sent : self.sent + self.step])
            except OSError:
                break
            self.sent += self.step
            self._done.wait(self.pause)
        self._done.wait(max(0.0, end - time.monotonic()))
        self.sock.close()
        return self

    @property
    def replies(self) -> list[RawReply]:
        return parse_replies(self.received)


def test_a_connection_that_says_nothing_is_closed_without_an_answer(stack: Stack, ledger: Ledger) -> None:
    ledger.tried("slowloris")
    with socket.create_connection(("127.0.0.1", stack.port), timeout=30) as sock:
        assert sock.recv(1024) == b""  # closed by the server (a hang would hit the 30 s socket timeout)


def test_a_kept_alive_connection_cannot_trickle_its_next_request(stack: Stack, ledger: Ledger) -> None:
    """The first request is served at once; the second is trickled after it, which stock uvicorn never
    bounds (its keep-alive timer is cancelled by the first byte and not armed again)."""
    ledger.tried("slowloris")
    token = stack.mint(A, roles=["Support.Agent"])
    first = request_head(token).replace(b"Connection: close\r\n", b"")
    second = request_head(token)
    with socket.create_connection(("127.0.0.1", stack.port), timeout=30) as sock:
        sock.sendall(first)
        received = b""
        while not [r for r in parse_replies(received) if r.complete]:
            received += sock.recv(65536)
        sent = 0
        sock.settimeout(0.1)
        end = time.monotonic() + 30
        while sent < len(second) and time.monotonic() < end:
            try:
                sock.sendall(second[sent : sent + 1])
                sent += 1
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:  # the server answered and closed while we were still sending
                break
            if not chunk:
                break
            received += chunk
        with contextlib.suppress(OSError):
            sock.settimeout(2)
            while chunk := sock.recv(65536):
                received += chunk
    replies = ledger.saw_raw(stack.audit_path, received, expected=2)
    assert [r.status for r in replies] == [200, 408]
    assert sent < len(second)


def test_a_body_that_stalls_is_cut_off_and_recorded_as_client_gone(stack: Stack, ledger: Ledger) -> None:
    """Head complete, 10 of 1000 body bytes, then silence: the connection is closed and the gateway,
    which was already streaming the body upstream, records the request as 499."""
    ledger.tried("slow body")
    token = stack.mint(A, app="mail-backend", roles=["Service.Mail"])
    started = time.time()
    head = (f"POST {SEND} HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer {token}\r\nX-Purpose: essential.service\r\n"
            "Content-Length: 1000\r\n\r\n").encode() + b"0123456789"  # fmt: skip
    with socket.create_connection(("127.0.0.1", stack.port), timeout=30) as sock:
        sock.sendall(head)
        assert sock.recv(65536) == b""  # closed by the server, no answer: the app never finished reading
    ledger.requests += 1
    ledger.unanswered += 1

    def recorded() -> bool:
        with contextlib.closing(sqlite3.connect(f"file:{stack.audit_path}?mode=ro", uri=True)) as conn:
            rows = conn.execute(
                "SELECT status, reason FROM decisions WHERE route = ? AND time_us >= ?",
                ("/gmail/v1/users/{userId}/messages/send", int(started * 1e6)),
            ).fetchall()
        return rows == [(499, "client_disconnected")]

    wait_until(recorded, timeout=10, message="the request recorded")


def test_a_slow_body_that_keeps_coming_is_not_cut_off(stack: Stack, ledger: Ledger) -> None:
    """Ten body chunks a tenth of the timeout apart: slow, never idle for long, served in full."""
    ledger.tried("slow body")
    token = stack.mint(A, app="mail-backend", roles=["Service.Mail"])
    body = b"x" * 100
    head = (f"POST {SEND} HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer {token}\r\nX-Purpose: essential.service\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()  # fmt: skip
    trickle = Trickle(stack.port, body, step=10, pause=TIMEOUT / 10, prefix=head).run()
    [reply] = ledger.saw_raw(stack.audit_path, trickle.received)
    assert reply.status == 200 and reply.json()["body_size"] == 100


def test_a_slightly_slow_head_is_served(stack: Stack, ledger: Ledger) -> None:
    ledger.tried("slowloris")
    head = request_head(stack.mint(A, roles=["Support.Agent"]))
    trickle = Trickle(stack.port, head, step=len(head) // 3 + 1, pause=TIMEOUT / 20).run()
    [reply] = ledger.saw_raw(stack.audit_path, trickle.received)
    assert reply.status == 200


def test_many_slow_connections_do_not_starve_a_normal_request(stack: Stack, ledger: Ledger) -> None:
    ledger.tried("slowloris", 40)
    head = request_head(stack.mint(A, roles=["Support.Agent"]))
    trickles = [Trickle(stack.port, head, step=1, pause=0.2) for _ in range(40)]
    threads = [threading.Thread(target=t.run, daemon=True) for t in trickles]
    for thread in threads:
        thread.start()
    time.sleep(0.3)
    token = stack.mint(A, roles=["Support.Agent"])
    reply = stack.http("GET", OWN, token=token, purpose=SUPPORT, timeout=10)
    ledger.saw(stack.audit_path, reply)
    assert reply.status == 200
    for thread in threads:
        thread.join(35)
    for trickle in trickles:  # each a head sent byte by byte (it would take minutes): cut off with 408
        [reply] = ledger.saw_raw(stack.audit_path, trickle.received)
        assert trickle.sent < len(head), "the server waited for the whole trickled head"
        assert reply.status == 408 and reply.header("X-Decision-Id")
        assert reply.json()["reason"] == "header_timeout"
        assert trickle.closed_by_server
