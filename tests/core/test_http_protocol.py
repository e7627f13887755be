"""The hardened HTTP protocol in-process: uvicorn's own protocol code on a memory transport, on fake
time (``tests/support/inprocess.py``), so a client stalling for seconds costs milliseconds and every
assertion about *when* is exact. The real-socket counterparts are in ``tests/hostile``."""

from __future__ import annotations

import asyncio
import pickle
from typing import Any

import pytest
from uvicorn.middleware.message_logger import MessageLoggerMiddleware
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from gateway import cliconfig
from gateway.http_protocol import (
    REQUEST_LINE_ALLOWANCE,
    GatewayHttpProtocol,
    ProtocolLimits,
    ProtocolRefusal,
    wired_protocol,
)
from gateway.serve import refusal_in_worker, uvicorn_options
from tests.support.inprocess import PEER, Connection, in_fake_time, uvicorn_config, uvicorn_log_levels_kept

TIMEOUT = 2.0
LIMITS = ProtocolLimits(head_timeout_seconds=TIMEOUT, max_head_bytes=4096, body_idle_seconds=TIMEOUT)
HEAD = b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"


class App:
    """Answers 200 with the size of the body it read. ``/held`` starts its answer, then waits for
    ``release`` before finishing it; ``/late`` waits for ``release`` before answering at all; ``/lazy``
    waits ``lazy_seconds`` before reading its body."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.received: list[dict[str, Any]] = []
        self.release = asyncio.Event()
        self.lazy_seconds = 0.0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        path = scope["path"]
        self.calls.append(path)
        if path == "/late":
            await self.release.wait()
        if path == "/lazy":
            await asyncio.sleep(self.lazy_seconds)
        size, more = 0, True
        while more:
            message = await receive()
            self.received.append(message)
            if message["type"] == "http.disconnect":
                return
            size += len(message.get("body", b""))
            more = message.get("more_body", False)
        body = str(size).encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(body))]})
        if path == "/held":
            await send({"type": "http.response.body", "body": body[:1], "more_body": True})
            await self.release.wait()
            body = body[1:]
        await send({"type": "http.response.body", "body": body})


def connect(app: App, refusals: list[ProtocolRefusal], limits: ProtocolLimits = LIMITS, **options: Any) -> Connection:
    return Connection(uvicorn_config(app, http=wired_protocol(limits, refusals.append), **options))


def assert_refusal(connection: Connection, refusals: list[ProtocolRefusal], status: int, reason: str) -> None:
    [reply] = connection.replies
    assert (reply.status, reply.json()["reason"]) == (status, reason)
    assert reply.header("Content-Type") == "application/problem+json"
    [refusal] = refusals
    assert (refusal.status, refusal.reason, refusal.client_ip) == (status, reason, PEER[0])
    assert reply.header("X-Decision-Id") == refusal.decision_id
    assert connection.is_closed


# -- the head timeout ----------------------------------------------------------------------------------


@in_fake_time
async def test_a_head_that_stops_arriving_is_answered_408_at_the_timeout_and_reported() -> None:
    app, refusals = App(), []
    connection = connect(app, refusals)
    connection.send(HEAD[:20])
    await asyncio.sleep(TIMEOUT - 0.01)
    assert connection.replies == [] and not connection.is_closed
    await connection.closed()
    assert asyncio.get_running_loop().time() == pytest.approx(TIMEOUT)
    assert_refusal(connection, refusals, 408, "header_timeout")
    assert (refusals[0].method, refusals[0].target) == ("GET", "/x")
    assert app.calls == []


@in_fake_time
async def test_a_head_trickled_byte_by_byte_is_cut_off_at_the_timeout() -> None:
    """Slowloris: every byte arrives well inside the timeout, the head as a whole does not."""
    refusals: list[ProtocolRefusal] = []
    connection = connect(App(), refusals)
    sent = 0
    while not connection.is_closed and sent < len(HEAD):
        connection.send(HEAD[sent : sent + 1])
        sent += 1
        await asyncio.sleep(0.1)
    assert sent < len(HEAD)
    assert_refusal(connection, refusals, 408, "header_timeout")


@in_fake_time
async def test_a_head_a_little_slow_is_served() -> None:
    refusals: list[ProtocolRefusal] = []
    connection = connect(App(), refusals)
    for part in (HEAD[:10], HEAD[10:30], HEAD[30:]):
        connection.send(part)
        await asyncio.sleep(TIMEOUT / 3)
    await connection.closed()
    assert [r.status for r in connection.replies] == [200]
    assert refusals == []


@in_fake_time
async def test_a_connection_that_says_nothing_is_closed_without_an_answer() -> None:
    refusals: list[ProtocolRefusal] = []
    connection = connect(App(), refusals)
    await connection.closed()
    assert asyncio.get_running_loop().time() == pytest.approx(TIMEOUT)
    assert connection.transport.written == b"" and refusals == []


@in_fake_time
async def test_the_next_request_on_a_kept_alive_connection_cannot_be_trickled() -> None:
    """Stock uvicorn never bounds it: its keep-alive timer is cancelled by the first byte."""
    refusals: list[ProtocolRefusal] = []
    connection = connect(App(), refusals)
    keep_alive = HEAD.replace(b"Connection: close\r\n", b"")
    connection.send(keep_alive)
    await asyncio.sleep(1.0)  # answered; the idle gap before the next byte is uvicorn's keep-alive (5 s)
    assert [r.status for r in connection.replies] == [200]
    first_byte_at = asyncio.get_running_loop().time()
    sent = 0
    while not connection.is_closed and sent < len(keep_alive):
        connection.send(keep_alive[sent : sent + 1])
        sent += 1
        await asyncio.sleep(0.1)
    assert sent < len(keep_alive)
    assert [r.status for r in connection.replies] == [200, 408]
    assert asyncio.get_running_loop().time() == pytest.approx(first_byte_at + TIMEOUT, abs=0.11)
    assert [r.reason for r in refusals] == ["header_timeout"]


# -- the body idle timeout -----------------------------------------------------------------------------


def post(path: str, length: int) -> bytes:
    return f"POST {path} HTTP/1.1\r\nHost: a\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n".encode()


@in_fake_time
async def test_a_body_that_stalls_closes_the_connection_and_the_app_sees_the_client_gone() -> None:
    app, refusals = App(), []
    connection = connect(app, refusals)
    connection.send(post("/", 1000) + b"0123456789")
    await connection.closed()
    assert asyncio.get_running_loop().time() == pytest.approx(TIMEOUT)
    assert app.received[-1]["type"] == "http.disconnect"
    assert connection.transport.written == b"" and refusals == []  # no answer: the app never finished reading


@in_fake_time
async def test_a_slow_body_that_keeps_coming_is_served_in_full() -> None:
    """Ten chunks each 0.75 of the idle timeout apart: 15 s in all, never idle for long."""
    refusals: list[ProtocolRefusal] = []
    connection = connect(App(), refusals)
    connection.send(post("/", 100))
    for _ in range(10):
        await asyncio.sleep(TIMEOUT * 0.75)
        connection.send(b"x" * 10)
    await connection.closed()
    [reply] = connection.replies
    assert (reply.status, reply.body) == (200, b"100")
    assert refusals == []


@in_fake_time
async def test_time_the_app_keeps_the_body_unread_is_not_counted_against_the_client() -> None:
    """uvicorn stops reading past its high-water mark (64 KiB) until the app reads: that wait is the
    app's, and a client whose bytes are all sent must not be cut off for it."""
    app, refusals = App(), []
    app.lazy_seconds = TIMEOUT * 5
    connection = connect(app, refusals)
    body = b"y" * (200 * 1024)
    connection.send(post("/lazy", len(body)) + body[: 70 * 1024])  # past the high-water mark: paused
    connection.send(body[70 * 1024 :])  # sent at once, but read only once the app reads
    await connection.closed()
    [reply] = connection.replies
    assert (reply.status, reply.body) == (200, str(len(body)).encode())
    assert refusals == []


# -- what it answers itself ----------------------------------------------------------------------------


@in_fake_time
async def test_a_head_past_the_cap_is_answered_431_at_once_and_reported() -> None:
    app, refusals = App(), []
    connection = connect(app, refusals)
    connection.send(b"GET /x HTTP/1.1\r\nHost: a\r\nX-Big: " + b"a" * LIMITS.max_head_bytes)
    assert_refusal(connection, refusals, 431, "head_too_large")
    assert asyncio.get_running_loop().time() == 0.0
    assert app.calls == []


@pytest.mark.parametrize(
    "data",
    [
        b"GARBAGE\r\n\r\n",
        b"GET /x\r\nHost: a\r\n\r\n",  # HTTP/0.9, which llhttp parses headers and all
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\nConnection: upgrade\r\nContent-Length: 1\r\n"
        b"Content-Length: 1\r\n\r\nx",  # an upgrade body whose end cannot be found safely
    ],
    ids=["not-http", "http-0.9", "connect", "upgrade-two-lengths"],
)
@in_fake_time
async def test_what_is_not_served_http_is_answered_400_and_reported(data: bytes) -> None:
    app, refusals = App(), []
    connection = connect(app, refusals)
    connection.send(data)
    assert_refusal(connection, refusals, 400, "not_http")
    assert app.calls == []


@in_fake_time
async def test_trailer_fields_never_join_the_request_headers() -> None:
    seen: list[list[tuple[bytes, bytes]]] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        while (await receive()).get("more_body"):
            pass
        seen.append(list(scope["headers"]))
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    connection = Connection(uvicorn_config(app, http=wired_protocol(LIMITS, [].append)))
    connection.send(b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                    b"2\r\nab\r\n0\r\nAuthorization: Bearer smuggled\r\n\r\n")  # fmt: skip
    await connection.closed()
    assert [r.status for r in connection.replies] == [204]
    assert [name for name, _ in seen[0]] == [b"host", b"transfer-encoding", b"connection"]


# -- pipelining: never an answer inside or before a response that is due ---------------------------------


SECOND = {
    "not http": b"GARBAGE\r\n\r\n",
    "head past the cap": b"GET /y HTTP/1.1\r\nX-Big: " + b"b" * LIMITS.max_head_bytes,
    "head that stalls": b"GET /y HTTP/1.1\r\nHost: a\r\n",
}


@pytest.mark.parametrize("first", ["/held", "/late"], ids=["response-started", "response-not-started"])
@pytest.mark.parametrize("second", list(SECOND))
@in_fake_time
async def test_a_refusal_pipelined_behind_a_running_response_is_never_written_into_it(first: str, second: str) -> None:
    app, refusals = App(), []
    connection = connect(app, refusals)
    connection.send(f"GET {first} HTTP/1.1\r\nHost: a\r\n\r\n".encode() + SECOND[second])
    await asyncio.sleep(TIMEOUT * 2)  # past the head timeout of the second request
    started = bytes(connection.transport.written)
    assert b"GARBAGE" not in started and b"problem+json" not in started and not connection.is_closed
    app.release.set()
    await connection.closed()
    assert [(r.status, r.complete) for r in connection.replies] == [(200, True)]
    assert connection.transport.written.startswith(started)  # the answer due went out whole, and alone
    assert app.calls == [first] and refusals == []


# -- the wiring: explicit, whatever wraps the app --------------------------------------------------------


class GatewayShaped(App):
    """Has what the protocol once looked up on the app it was handed (``config``, ``protocol_refusal``),
    so a protocol that still did would pass here unwrapped and fail wrapped: the defect of issue 17."""

    def __init__(self, config: Any) -> None:
        super().__init__()
        self.config = config
        self.refusals: list[ProtocolRefusal] = []

    def protocol_refusal(self, refusal: ProtocolRefusal) -> None:
        self.refusals.append(refusal)


@pytest.mark.parametrize(
    ("settings", "wrapper"),
    [
        ({"GATEWAY_SERVER_LOG_LEVEL": "trace"}, MessageLoggerMiddleware),
        ({"GATEWAY_SERVER_LOG_LEVEL": "warning"}, ProxyHeadersMiddleware),
        ({"GATEWAY_SERVER_LOG_LEVEL": "warning"}, None),
    ],
    ids=["trace-logging", "proxy-headers", "unwrapped"],
)
@in_fake_time
async def test_no_log_level_or_middleware_switches_the_configured_limits_off(
    settings: dict[str, str], wrapper: type | None
) -> None:
    """uvicorn wraps the app (its message logger under log_level = "trace"); the limits configured
    (a 1 s head timeout, 4 KiB of headers), not uvicorn's or the old defaults (10 s, 32 KiB), still
    apply, and the refusals still reach the gateway's hook."""
    config = cliconfig.load(None, environ={
        **settings, "GATEWAY_SERVER_MAX_HEADER_BYTES": "4096", "GATEWAY_SERVER_HEADER_TIMEOUT_SECONDS": "1",
    })  # fmt: skip
    gateway = GatewayShaped(config)
    refusals = gateway.refusals
    options = uvicorn_options(config, gateway.protocol_refusal)
    for key in ("host", "port", "loop"):
        options.pop(key)
    if wrapper is ProxyHeadersMiddleware:
        options.update(proxy_headers=True, forwarded_allow_ips="*")
    with uvicorn_log_levels_kept():
        loaded = uvicorn_config(gateway, **options)
        if wrapper is None:
            assert loaded.loaded_app is gateway
        else:
            assert isinstance(loaded.loaded_app, wrapper)  # the app the protocol is handed is not the gateway
        big = Connection(loaded)
        big.send(b"GET /x HTTP/1.1\r\nX-Pad: " + b"a" * (4096 + REQUEST_LINE_ALLOWANCE))  # < 48 KiB
        stalled = Connection(loaded)
        stalled.send(b"GET /x HTTP/1.1\r\n")
        await stalled.closed()
    assert asyncio.get_running_loop().time() == pytest.approx(1.0)
    assert [(r.status, r.json()["reason"]) for r in big.replies + stalled.replies] == [
        (431, "head_too_large"), (408, "header_timeout"),
    ]  # fmt: skip
    assert [r.status for r in refusals] == [431, 408]


def test_serve_wires_the_configured_limits_and_the_hook() -> None:
    config = cliconfig.load(None, environ={
        "GATEWAY_SERVER_MAX_HEADER_BYTES": "1000", "GATEWAY_SERVER_HEADER_TIMEOUT_SECONDS": "3",
    })  # fmt: skip
    refusals: list[ProtocolRefusal] = []
    factory = uvicorn_options(config, refusals.append)["http"]
    assert factory.func is GatewayHttpProtocol
    assert factory.keywords == {
        "limits": ProtocolLimits(head_timeout_seconds=3.0, max_head_bytes=1000 + REQUEST_LINE_ALLOWANCE,
                                 body_idle_seconds=3.0),
        "on_refusal": refusals.append,
    }  # fmt: skip


def test_the_workers_wiring_pickles_and_reaches_the_gateway_the_worker_builds() -> None:
    """uvicorn hands its configuration to worker processes by pickling it (spawn)."""
    config = cliconfig.load(None, environ={"GATEWAY_SERVER_HEADER_TIMEOUT_SECONDS": "3"})
    factory = pickle.loads(pickle.dumps(uvicorn_options(config, refusal_in_worker)["http"]))
    assert factory.keywords["limits"].head_timeout_seconds == 3.0
    assert factory.keywords["on_refusal"] is refusal_in_worker
    with pytest.raises(RuntimeError, match="before this worker built its gateway"):
        refusal_in_worker(ProtocolRefusal("d", 0.0, 400, "not_http", "", "", "", ""))


@pytest.mark.parametrize("field", ["head_timeout_seconds", "max_head_bytes", "body_idle_seconds"])
@pytest.mark.parametrize("value", [0, -1, float("nan")])
def test_limits_that_would_bound_nothing_are_refused(field: str, value: float) -> None:
    good: dict[str, Any] = {"head_timeout_seconds": 1.0, "max_head_bytes": 1, "body_idle_seconds": 1.0}
    with pytest.raises(ValueError, match=field):
        ProtocolLimits(**{**good, field: value})


def test_the_protocol_has_no_default_limits_to_fall_back_to() -> None:
    config = uvicorn_config(App(), http=GatewayHttpProtocol)
    with pytest.raises(TypeError, match="limits"):
        GatewayHttpProtocol(config=config, server_state=None, app_state={})  # type: ignore[arg-type]
