"""uvicorn's httptools protocol with the limits a proxy facing hostile clients needs before the app runs.

uvicorn (0.54) bounds nothing until a request head is complete: a connection that sends nothing, or
sends its head a byte at a time (slowloris), is held forever, since the keep-alive timer is only armed
after a response and is cancelled by the first byte of the next request; httptools buffers a head of
any size; a body that stops arriving keeps the request (and the gateway's upstream connection)
waiting forever; and the 400 it answers to bytes that are not HTTP carries no decision id and is
audited nowhere. ``GatewayHttpProtocol`` adds, selected with ``uvicorn.run(..., http=wired_protocol(...))``:

- Head timeout (``server.header_timeout_seconds``): the head must be complete within that long of the
  connection opening, or of the first byte of a later request on a kept-alive connection (the idle gap
  before that first byte stays uvicorn's keep-alive timeout). Expiry answers 408 and closes; a
  connection that sent nothing at all is closed without an answer.
- Body idle timeout (the same number of seconds): while a request body is being received, the client
  may pause at most that long between two chunks. Time during which uvicorn has stopped reading (flow
  control: the app, not the client, is the slow side) does not count. Expiry closes the connection;
  the app sees ``http.disconnect`` (the gateway records it as 499).
- Head size: a head still incomplete after ``server.max_header_bytes`` plus ``REQUEST_LINE_ALLOWANCE``
  bytes is answered 431 and the connection closed, so memory per connection stays bounded. Smaller
  oversized heads still reach the app, which answers 431 itself (precisely, and audited).
- HTTP/0.9 (a request line without a version, which llhttp accepts, headers and all) is refused.
- Trailer fields of a chunked body are dropped: uvicorn appends them to the request's header list,
  where an app that reads the headers after the body arrived would take them for headers.
- Every refusal it answers itself (400 not HTTP, 408, 431) is problem+json with an ``X-Decision-Id``
  and a ``reason`` member (``not_http``, ``header_timeout``, ``head_too_large``), and is reported to
  the refusal callback it was given (the gateway's ``protocol_refusal``), so that it is audited like
  any other response.

Upgrade (``Connection: upgrade`` with ``Upgrade: h2c``, ``websocket``, ...) is declined by ignoring it,
as RFC 9110 section 7.8 lets a server do: the request is decided, audited and answered as the plain
HTTP/1.1 request it also is, never switched to another protocol, and the connection is closed after
the answer (``Connection: close``). Why ignore rather than refuse: the gateway proxies HTTP/1.1 only,
and a client offering an upgrade (curl's ``--http2`` on an ``http://`` URL offers ``h2c`` on every
request, bodies included) is still asking for the request itself, which a plain answer serves, as
Envoy does for ``h2c``; a WebSocket client gets the route's ordinary answer (a 403 for anything
unmapped, or the resource) instead of a ``101``, and gives up cleanly. Refusing would break such
clients for no protection: the upgrade never reaches the upstream (``Upgrade`` and ``Connection``
are hop-by-hop, ``gateway/request.py``). The difficulty is the body: httptools tells llhttp to skip
the body of any upgrade request (the rest of the stream is "another protocol"), so uvicorn saw the
request complete and empty, forwarded its ``Content-Length`` and never the body, and the upstream
waited for bytes that never came (15 s, then 502). Here the body is read by a second llhttp parser
that is fed a minimal head carrying the request's own framing (its single ``Content-Length``, or
``Transfer-Encoding: chunked``) and then the bytes after the head, so chunked decoding stays
llhttp's and is never re-implemented. Framing that is not exactly one of those two is refused
before the app runs (400 ``not_http``: the body's end could not be found safely). Anything after
the body on that connection is discarded (a pipelined request behind an upgrade is not answered; the
close tells the client to retry it). uvicorn's own WebSocket hand-over is never used, whatever
libraries are installed: the gateway does not proxy WebSockets. ``CONNECT`` (a tunnel, which llhttp
also reports as an upgrade) is refused (400).

Wiring: the protocol is given its limits (``ProtocolLimits``) and the callback its refusals go to,
explicitly; ``wired_protocol`` binds both into the factory uvicorn is handed as ``http=``. Nothing
is looked up on the ASGI app, which uvicorn may wrap (its message logger under ``log_level =
"trace"``, proxy-header middleware, ...): a log level or a middleware can never switch a limit off
or leave a refusal unaudited, and there are no defaults to fall back to. The factory is a
``functools.partial`` of module-level names, so it pickles into uvicorn's worker processes.
What it never does: interleave its own answer with a response already being written on the same
connection (pipelining); then it drops the requests queued behind that response and closes the
connection once it is complete.

Size: it is one subclass of uvicorn's protocol; every override of uvicorn's private methods stays
in this one file (``OVERRIDDEN``) so the surface the uvicorn pin protects can be read in one place.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httptools
from uvicorn._types import ASGI3Application
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol, RequestResponseCycle
from uvicorn.server import ServerState

from gateway.audit.ids import uuid7
from gateway.problem import PROBLEM_CONTENT_TYPE, problem_body

#: The methods of uvicorn's protocol this one overrides (several private). Were one of them gone or
#: renamed (``_start_asgi_task`` is not in every release), the override would silently never run and
#: its guard would be off: refuse to load instead. ``CALLED`` are the private ones it calls.
OVERRIDDEN = (
    "_should_upgrade", "_start_asgi_task", "connection_lost", "connection_made", "data_received",
    "on_body", "on_header", "on_headers_complete", "on_message_begin", "on_message_complete",
    "send_400_response",
)  # fmt: skip
CALLED = ("_unset_keepalive_if_required",)


def missing_in(base: type) -> list[str]:
    """The names of ``OVERRIDDEN`` and ``CALLED`` that ``base`` (uvicorn's protocol) has no method for."""
    return [name for name in (*OVERRIDDEN, *CALLED) if not callable(getattr(base, name, None))]


def check_uvicorn(base: type) -> None:
    missing = missing_in(base)
    if missing:
        raise ImportError(
            f"the installed uvicorn's HttpToolsProtocol has no {', '.join(missing)}: the gateway's hardened "
            "protocol relies on it; install a uvicorn in the range pyproject.toml names"
        )


check_uvicorn(HttpToolsProtocol)

logger = logging.getLogger("gateway.http")

# Room for the request line and line endings on top of the header limit the app enforces itself.
REQUEST_LINE_ALLOWANCE = 16 * 1024
_MAX_TARGET_CHARS = 256


@dataclass(frozen=True, slots=True)
class ProtocolRefusal:
    """A request the HTTP layer answered itself, before the app saw it."""

    decision_id: str
    time: float
    status: int  # 400, 408 or 431
    reason: str  # not_http, header_timeout, head_too_large
    detail: str
    client_ip: str
    method: str  # "" when the request line was not parsed
    target: str  # the request target received so far (truncated), "" if none


RefusalHook = Callable[[ProtocolRefusal], None]


@dataclass(frozen=True, slots=True)
class ProtocolLimits:
    """What the protocol bounds before the app runs (positive, or it refuses to be built)."""

    head_timeout_seconds: float  # a request head must be complete within this
    max_head_bytes: int  # an incomplete head past this many bytes is answered 431
    body_idle_seconds: float  # the longest pause allowed between two chunks of a request body

    def __post_init__(self) -> None:
        for name in ("head_timeout_seconds", "max_head_bytes", "body_idle_seconds"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise ValueError(f"ProtocolLimits.{name} must be a positive number, not {value!r}")

    @classmethod
    def configured(cls, *, header_timeout_seconds: float, max_header_bytes: int) -> ProtocolLimits:
        """From ``server.header_timeout_seconds`` and ``server.max_header_bytes`` (the app answers heads
        over that limit 431 itself; the protocol's cap leaves room for the request line on top)."""
        return cls(
            head_timeout_seconds=float(header_timeout_seconds),
            max_head_bytes=max_header_bytes + REQUEST_LINE_ALLOWANCE,
            body_idle_seconds=float(header_timeout_seconds),
        )


def wired_protocol(limits: ProtocolLimits, on_refusal: RefusalHook) -> Callable[..., GatewayHttpProtocol]:
    """The protocol factory to hand uvicorn as ``http=``: every connection gets these limits and hook."""
    return functools.partial(GatewayHttpProtocol, limits=limits, on_refusal=on_refusal)


class GatewayHttpProtocol(HttpToolsProtocol):
    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        limits: ProtocolLimits,
        on_refusal: RefusalHook,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._head_timeout = limits.head_timeout_seconds
        self._body_idle = limits.body_idle_seconds
        self._max_head_bytes = limits.max_head_bytes
        self._on_refusal = on_refusal
        self._awaiting_head = False
        self._head_bytes = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._reading_body = False
        self._last_body_at = 0.0
        self._body_timer: asyncio.TimerHandle | None = None
        self._running: RequestResponseCycle | None = None
        self.url = b""
        # an upgrade request being served as plain HTTP/1.1 (see the module docstring)
        self._upgrade_framing: bytes | None = None  # the framing header of its body, None = no body
        self._upgrade_body: _BodyReader | None = None
        self._after_upgrade = False  # the main parser stopped at an upgrade: it reads nothing more

    # -- connection life -----------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._awaiting_head = True
        self._head_bytes = 0
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        self._cancel_body_timer()
        super().connection_lost(exc)

    def _should_upgrade(self) -> bool:
        return False  # never hand the connection to uvicorn's WebSocket protocols: upgrades are ignored

    def data_received(self, data: bytes) -> None:
        self._unset_keepalive_if_required()
        if self._after_upgrade:
            self._feed_upgrade_body(data)
            return
        if self._awaiting_head:
            self._head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            own = exc.__context__ if isinstance(exc.__context__, _NotServed) else None
            detail = str(own) if own else f"the request is not valid HTTP/1.1: {_printable(str(exc))}"
            self._refuse(400, "not_http", detail)
            return
        except httptools.HttpParserUpgrade as exc:
            # The head of an upgrade request is complete and its cycle started as a plain request;
            # llhttp stops here: what follows (its body, if any) is read by the body reader.
            self._after_upgrade = True
            offset = exc.args[0] if exc.args and isinstance(exc.args[0], int) else len(data)
            logger.debug("serving an upgrade request as HTTP/1.1, ignoring the upgrade")
            self._feed_upgrade_body(data[offset:])
            return
        too_large = self._awaiting_head and self._head_bytes > self._max_head_bytes
        if too_large and not self.transport.is_closing():
            self._refuse(431, "head_too_large", f"request head larger than {self._max_head_bytes} bytes")

    def send_400_response(self, msg: str) -> None:
        self._refuse(400, "not_http", "the request is not valid HTTP/1.1")

    # -- parser callbacks ----------------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self._awaiting_head:
            # A chunked body's trailer fields: uvicorn would append them to the request's headers,
            # which the app may read only after they arrived, so a trailer could pose as a header.
            return
        super().on_header(name, value)

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: ASGI3Application) -> None:
        self._running = cycle
        super()._start_asgi_task(cycle, app)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if not self._awaiting_head:
            self._awaiting_head = True
            self._head_bytes = 0
        if self._head_timer is None:
            self._arm_head_timer()

    def on_headers_complete(self) -> None:
        self._awaiting_head = False
        self._cancel_head_timer()
        if self.parser.get_http_version() == "0.9":
            # llhttp reads "GET /path" with no version as HTTP/0.9 and still parses headers after it.
            raise _NotServed("HTTP/0.9 requests are not served")
        upgrade = self.parser.should_upgrade()
        if upgrade:
            if self.parser.get_method() == b"CONNECT":
                raise _NotServed("CONNECT is not served: the gateway is no tunnel")
            self._upgrade_framing = _body_framing(self.headers)
        super().on_headers_complete()
        if upgrade:
            self.cycle.keep_alive = False  # the request is the last one read on this connection
        self._reading_body = True
        self._last_body_at = self.loop.time()
        if self._body_timer is None:
            self._body_timer = self.loop.call_later(self._body_idle, self._check_body_idle)

    def on_body(self, body: bytes) -> None:
        self._last_body_at = self.loop.time()
        super().on_body(body)

    def on_message_complete(self) -> None:
        if self._upgrade_framing is not None and self._upgrade_body is None:
            # llhttp skipped the body of an upgrade request and calls it complete: it is not. The
            # body reader takes over, and completes the request when the body really has arrived.
            self._upgrade_body = _BodyReader(self, self._upgrade_framing)
            return
        self._reading_body = False
        self._cancel_body_timer()
        super().on_message_complete()

    def _feed_upgrade_body(self, data: bytes) -> None:
        reader = self._upgrade_body
        if reader is None or reader.done or not data:
            return  # no body, or all of it arrived: later bytes on this connection are not read
        try:
            reader.feed(data)
        except httptools.HttpParserError as exc:
            if not reader.done:
                self._refuse(400, "not_http", f"the request body is not valid HTTP/1.1: {_printable(str(exc))}")

    def _upgrade_body_complete(self) -> None:
        self._upgrade_framing = None
        self.on_message_complete()

    # -- timers --------------------------------------------------------------------------------------

    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        self._head_timer = self.loop.call_later(self._head_timeout, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _cancel_body_timer(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or not self._awaiting_head:
            return
        if self._head_bytes == 0 and self.cycle is None:
            self.transport.close()  # connected and said nothing: not a request, nothing to answer
            return
        detail = f"the request head did not arrive within {self._head_timeout:g} s"
        self._refuse(408, "header_timeout", detail)

    def _check_body_idle(self) -> None:
        self._body_timer = None
        if self.transport.is_closing() or not self._reading_body:
            return
        now = self.loop.time()
        if self.flow.read_paused:
            self._last_body_at = now  # we stopped reading: the wait is ours, not the client's
        idle = now - self._last_body_at
        if idle < self._body_idle:
            self._body_timer = self.loop.call_later(self._body_idle - idle, self._check_body_idle)
            return
        logger.info("closing a connection whose request body stalled for %.1f s", idle)
        self.transport.close()

    # -- answering without the app -------------------------------------------------------------------

    def _refuse(self, status: int, reason: str, detail: str) -> None:
        self._cancel_head_timer()
        self._cancel_body_timer()
        running = self._running
        if running is not None and not running.response_complete:
            about_running = self._reading_body and running is self.cycle
            if running.response_started or not about_running:
                # A response to an earlier request is due on this connection: never put ours before
                # or inside it. Drop what is queued behind it and close once it is complete.
                running.keep_alive = False
                self.pipeline.clear()
                self.flow.pause_reading()
                return
        # Answer now. If it is the body of the running request that failed, its app sees the client
        # gone (it has not answered yet, so nothing of its answer is lost).
        refusal = ProtocolRefusal(
            decision_id=uuid7(),
            time=time.time(),
            status=status,
            reason=reason,
            detail=detail,
            client_ip=self.client[0] if self.client else "",
            method=self._method(),
            target=self.url[:_MAX_TARGET_CHARS].decode("latin-1"),
        )
        body = problem_body(status, detail, decision_id=refusal.decision_id, reason=reason)
        content = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            content.extend([name, b": ", value, b"\r\n"])
        content.extend(
            [
                b"content-type: ", PROBLEM_CONTENT_TYPE, b"\r\n",
                b"x-decision-id: ", refusal.decision_id.encode(), b"\r\n",
                b"content-length: ", str(len(body)).encode(), b"\r\n",
                b"connection: close\r\n\r\n",
                body,
            ]
        )  # fmt: skip
        self.transport.write(b"".join(content))
        self.transport.close()
        self._report(refusal)

    def _method(self) -> str:
        try:
            method = self.parser.get_method() if self.parser is not None else b""
        except Exception:  # httptools raises when no request line was parsed
            return ""
        return method.decode("latin-1") if isinstance(method, bytes) and self.url else ""

    def _report(self, refusal: ProtocolRefusal) -> None:
        try:
            self._on_refusal(refusal)
        except Exception:
            logger.exception("protocol_refusal hook failed for %s", refusal.decision_id)


class _BodyReader:
    """Reads the body of an upgrade request with a parser of its own (llhttp skips it in the main one).

    The parser is primed with a minimal head that carries only the request's framing header, so it
    counts a ``Content-Length`` or decodes chunks exactly as it would have. Its chunks go to the
    protocol's ``on_body`` (body idle timer, flow control, the cycle's body); the end of its message
    completes the request. After that it reads nothing more.
    """

    __slots__ = ("done", "parser", "protocol")

    def __init__(self, protocol: GatewayHttpProtocol, framing: bytes) -> None:
        self.protocol = protocol
        self.done = False
        self.parser = httptools.HttpRequestParser(self)
        self.parser.feed_data(b"POST / HTTP/1.1\r\nHost: body\r\n" + framing + b"\r\n\r\n")

    def feed(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_body(self, body: bytes) -> None:
        if not self.done:
            self.protocol.on_body(body)

    def on_message_complete(self) -> None:
        if not self.done:
            self.done = True
            self.protocol._upgrade_body_complete()


def _body_framing(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    """The framing header of an upgrade request's body (None: it has none), or ``_NotServed``."""
    lengths = [value.strip() for name, value in headers if name == b"content-length"]
    codings = [t.strip().lower() for name, value in headers if name == b"transfer-encoding" for t in value.split(b",")]
    if codings:
        if lengths or codings != [b"chunked"]:
            raise _NotServed("an upgrade request's body must be framed by one Content-Length or by chunked alone")
        return b"Transfer-Encoding: chunked"
    if not lengths:
        return None
    if len(lengths) > 1 or not lengths[0].isdigit() or len(lengths[0]) > 18:
        raise _NotServed("an upgrade request's Content-Length must be one non-negative integer")
    return None if int(lengths[0]) == 0 else b"Content-Length: " + lengths[0]


class _NotServed(Exception):
    """Raised in a parser callback to refuse what httptools accepts (it surfaces as a parser error)."""


def _printable(text: str) -> str:
    return "".join(c if " " <= c <= "~" else "?" for c in text)[:120]
