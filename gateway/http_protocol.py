"""uvicorn's httptools protocol with the limits a proxy facing hostile clients needs before the app runs.

uvicorn (0.54) bounds nothing until a request head is complete: a connection that sends nothing, or
sends its head a byte at a time (slowloris), is held forever, since the keep-alive timer is only armed
after a response and is cancelled by the first byte of the next request; httptools buffers a head of
any size; a body that stops arriving keeps the request (and the gateway's upstream connection)
waiting forever; and the 400 it answers to bytes that are not HTTP carries no decision id and is
audited nowhere. ``GatewayHttpProtocol`` adds, selected with ``uvicorn.run(..., http=GatewayHttpProtocol)``:

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
  the app's ``protocol_refusal(ProtocolRefusal)`` method, when it has one, so that it can be audited
  like any other response.

Limits come from the app's configuration (``app.config.server``), so the class needs no arguments
and can be named by reference in a multi-worker configuration. What it never does: interleave its
own answer with a response already being written on the same connection (pipelining); then it
drops the requests queued behind that response and closes the connection once it is complete.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

import httptools
from uvicorn._types import ASGI3Application
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol, RequestResponseCycle
from uvicorn.server import ServerState

from gateway.audit.ids import uuid7
from gateway.problem import PROBLEM_CONTENT_TYPE, problem_body

logger = logging.getLogger("gateway.http")

DEFAULT_HEAD_TIMEOUT_SECONDS = 10.0
DEFAULT_MAX_HEADER_BYTES = 32 * 1024
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


@dataclass(frozen=True, slots=True)
class HeadLimits:
    head_timeout_seconds: float
    max_head_bytes: int


def limits_for(app: Any) -> HeadLimits:
    """The limits configured for ``app`` (the gateway: ``app.config.server``), or the defaults."""
    server = getattr(getattr(app, "config", None), "server", None)
    timeout = getattr(server, "header_timeout_seconds", DEFAULT_HEAD_TIMEOUT_SECONDS)
    max_header = getattr(server, "max_header_bytes", DEFAULT_MAX_HEADER_BYTES)
    if not isinstance(timeout, int | float) or timeout <= 0:
        timeout = DEFAULT_HEAD_TIMEOUT_SECONDS
    if not isinstance(max_header, int) or max_header <= 0:
        max_header = DEFAULT_MAX_HEADER_BYTES
    return HeadLimits(float(timeout), max_header + REQUEST_LINE_ALLOWANCE)


class GatewayHttpProtocol(HttpToolsProtocol):
    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        limits = limits_for(self.app)
        self._head_timeout = limits.head_timeout_seconds
        self._body_idle = limits.head_timeout_seconds
        self._max_head_bytes = limits.max_head_bytes
        self._awaiting_head = False
        self._head_bytes = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._reading_body = False
        self._last_body_at = 0.0
        self._body_timer: asyncio.TimerHandle | None = None
        self._running: RequestResponseCycle | None = None
        self.url = b""

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

    def handle_websocket_upgrade(self) -> None:
        self._cancel_head_timer()
        self._cancel_body_timer()
        super().handle_websocket_upgrade()

    def data_received(self, data: bytes) -> None:
        self._unset_keepalive_if_required()
        if self._awaiting_head:
            self._head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            own = exc.__context__ if isinstance(exc.__context__, _NotServed) else None
            detail = str(own) if own else f"the request is not valid HTTP/1.1: {_printable(str(exc))}"
            self._refuse(400, "not_http", detail)
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
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
        super().on_headers_complete()
        self._reading_body = True
        self._last_body_at = self.loop.time()
        if self._body_timer is None:
            self._body_timer = self.loop.call_later(self._body_idle, self._check_body_idle)

    def on_body(self, body: bytes) -> None:
        self._last_body_at = self.loop.time()
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._reading_body = False
        self._cancel_body_timer()
        super().on_message_complete()

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
        hook = getattr(self.app, "protocol_refusal", None)
        if hook is None:
            logger.info("refused a request before the app saw it: %s %s", refusal.status, refusal.reason)
            return
        try:
            hook(refusal)
        except Exception:
            logger.exception("protocol_refusal hook failed for %s", refusal.decision_id)


class _NotServed(Exception):
    """Raised in a parser callback to refuse what httptools accepts (it surfaces as a parser error)."""


def _printable(text: str) -> str:
    return "".join(c if " " <= c <= "~" else "?" for c in text)[:120]
