"""The request path, top to bottom: authenticate, map, decide, audit, forward, mask.

``Gateway`` is a plain ASGI callable (no framework on the hot path). Every request gets a decision id
(UUIDv7) and exactly one audit record, whatever its outcome, committed (durable mode) or queued
(async mode) before the first response byte leaves. Any unexpected error answers 500 and is audited:
nothing reaches the upstream unless authentication and policy both said yes.

The steps up to the audit (``admit``: limits, authenticate, map; ``decide``; ``audit_writable``;
``audit_record``) are shared with ``gateway/extauthz/``, which answers Envoy's ext_authz checks with
them: each answers and audits its own refusal and returns None, so both modes read top to bottom.

Size: the request path and every answer it gives of its own (refusals, problems, health, readiness,
lifespan and reload) stay in this one file, so a request can be followed from its first byte to its
audit record without leaving it. The steps themselves live in their packages; what is here is the order.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import time
from collections.abc import Awaitable
from typing import Any

import aiohttp
from multidict import CIMultiDict

from gateway.adapters.routemap import RouteMatch
from gateway.audit.errors import AuditUnavailable
from gateway.audit.ids import uuid7
from gateway.audit.record import DecisionRecord
from gateway.audit.sink import AuditSink
from gateway.audit.tracecontext import format_traceparent, new_span_id, parse_traceparent
from gateway.authz.authorizer import Authorizer
from gateway.authz.decision import Decision
from gateway.config import Config
from gateway.exchange import Exchange
from gateway.http_protocol import ProtocolRefusal
from gateway.identity.authenticator import Authenticator
from gateway.identity.bearer import www_authenticate
from gateway.identity.errors import AuthenticationError
from gateway.identity.principal import Principal
from gateway.problem import PROBLEM_CONTENT_TYPE, problem_body
from gateway.proxy import (
    BodyTooLarge,
    ClientGone,
    Receive,
    RequestBody,
    Send,
    UpstreamClient,
    UpstreamError,
    read_bounded,
    relay_body,
    response_headers,
)
from gateway.request import MalformedRequest, RequestHead, parse_request_head

logger = logging.getLogger("gateway")

JSON = b"application/json"


class Gateway:
    def __init__(
        self,
        config: Config,
        *,
        authenticator: Authenticator,
        authorizer: Authorizer,
        audit: AuditSink,
        upstream: UpstreamClient,
        meter_provider: Any = None,
    ) -> None:
        self.config = config
        self.meter_provider = meter_provider
        self.authenticator = authenticator
        self.authorizer = authorizer
        self.audit = audit
        self.upstream = upstream
        self._max_header_bytes = config.server.max_header_bytes
        self._max_body_bytes = config.server.max_body_bytes
        self._max_masked_bytes = config.upstream.max_masked_body_bytes
        self._forward_authorization = config.upstream.forward_authorization
        self._fail_closed = config.audit.fail_closed
        self._background: set[asyncio.Task[None]] = set()
        # seeds every record's ``extra``: {} in proxy mode, {"mode": "ext-authz"} behind Envoy
        self.record_extra: dict[str, str] = {}
        self.assertions: Any = None  # gateway/assertion.py AssertionSigner, set by build_gateway

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            path = scope["path"]
            if path == "/healthz":
                await self._health(send)
            elif path == "/readyz":
                await self._ready(send)
            elif path == "/.well-known/jwks.json" and self.assertions is not None:
                await self.assertions.serve_jwks(send)  # the assertion keys, without a token
            else:
                await self.handle(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        elif kind == "websocket":
            await send({"type": "websocket.close", "code": 1008, "reason": "websockets are not proxied"})

    # -- the request path ----------------------------------------------------------------------------

    async def handle(
        self, scope: dict[str, Any], receive: Receive, send: Send, extra: dict[str, str] | None = None
    ) -> None:
        """One request in proxy mode. ``extra`` seeds the record's ``extra`` (e.g. which mode decided)."""
        exchange = self.exchange(scope, send, extra)
        await self.guarded(exchange, self._process(scope, receive, exchange))

    def exchange(self, scope: dict[str, Any], send: Send, extra: dict[str, str] | None = None) -> Exchange:
        """A fresh decision id and audit record for one request."""
        return Exchange(
            send, decision_id=uuid7(), time=time.time(), method=scope["method"], path=scope["path"],
            clock=time.perf_counter(), extra=dict(self.record_extra if extra is None else extra),
        )  # fmt: skip

    async def guarded(self, exchange: Exchange, work: Awaitable[None]) -> None:
        """Run one request's work; an unexpected error answers 500 and is audited, never forwards."""
        try:
            await work
        except Exception:
            logger.exception("unexpected error handling request %s", exchange.decision_id)
            if not exchange.started and not exchange.audited:
                exchange.reason = "internal_error"
                await self._problem(exchange, 500, "the gateway failed to handle this request")

    async def _process(self, scope: dict[str, Any], receive: Receive, exchange: Exchange) -> None:
        # 0-2. limits, authenticate, map (shared with the ext_authz check: gateway/extauthz/)
        admitted = await self.admit(scope, exchange)
        if admitted is None:
            return None
        head, principal, match = admitted

        body_source = RequestBody(receive, self._max_body_bytes)
        lifted_body: bytes | None = None
        lift_limit = self.authorizer.body_needed(match)
        if lift_limit and head.has_body:
            try:
                lifted_body = await body_source.read_all(lift_limit)
            except BodyTooLarge:
                exchange.reason = "body_too_large"
                return await self._problem(exchange, 413, f"request body larger than {lift_limit} bytes")
            except ClientGone:
                return await self._client_gone(exchange)

        # 3. decide: Cedar, with purpose, recipient and consent from the request.
        decision = await self.decide(exchange, head, principal, match, lifted_body)
        if decision is None:
            return None

        # 4. audit: refuse before touching the upstream if the record of truth cannot be written.
        if not await self.audit_writable(exchange):
            return None

        # 5. forward
        body: bytes | Any | None
        if lifted_body is not None:
            body = lifted_body
        elif head.has_body:
            body = body_source.stream()
        else:
            body = None
        headers = self._upstream_headers(head, principal, decision, exchange)
        upstream_clock = time.perf_counter()
        try:
            response = await self.upstream.open(head.method, head.target, headers, body)
        except UpstreamError as exc:
            exchange.reason = "upstream_timeout" if exc.status == 504 else "upstream_error"
            return await self._problem(exchange, exc.status, exc.detail)
        except BodyTooLarge:
            exchange.reason = "body_too_large"
            return await self._problem(exchange, 413, f"request body larger than {self._max_body_bytes} bytes")
        except ClientGone:
            return await self._client_gone(exchange)
        exchange.upstream_ms = round((time.perf_counter() - upstream_clock) * 1000, 3)

        # 6. review (record facts, masks), then release the response once its record is safe.
        try:
            if decision.inspects_response:
                await self._respond_reviewed(exchange, response, decision)
            else:
                await self._respond_streamed(exchange, response)
        finally:
            response.release()
        return None

    # -- the steps both modes share (proxy here, the ext_authz check in gateway/extauthz/) -------------
    # Each answers and audits the request itself when it refuses, and then returns None.

    async def admit(
        self, scope: dict[str, Any], exchange: Exchange
    ) -> tuple[RequestHead, Principal, RouteMatch] | None:
        """0. limits, 1. authenticate, 2. map: the request head, the verified principal, the route."""
        try:
            head = parse_request_head(scope, self._max_header_bytes, self._forward_authorization)
        except MalformedRequest as exc:
            exchange.reason = "malformed_request"
            await self._problem(exchange, exc.status, exc.detail)
            return None
        trace_id, parent_span_id = parse_traceparent(head.traceparent)
        exchange.trace_id, exchange.parent_span_id, exchange.span_id = trace_id, parent_span_id, new_span_id()

        # 1. authenticate: identity comes from the verified token only.
        try:
            principal = await self.authenticator.authenticate(head.authorization)
        except AuthenticationError as exc:
            exchange.reason = exc.reason
            exchange.decision_us = _elapsed_us(exchange.clock)
            await self._unauthenticated(exchange, exc)
            return None
        exchange.principal = principal

        # 2. map: the route map turns method and path into an action on a resource; unmapped = deny.
        match = self.authorizer.match(head.method, head.path, head.raw_path)
        if match is None:
            exchange.reason = "unmapped_route"
            exchange.decision_us = _elapsed_us(exchange.clock)
            await self._forbidden(exchange, self.authorizer.unmapped_reasons())
            return None
        exchange.route = match.template

        if head.content_length is not None and head.content_length > self._max_body_bytes:
            exchange.reason = "body_too_large"
            await self._problem(exchange, 413, f"request body larger than {self._max_body_bytes} bytes")
            return None
        return head, principal, match

    async def decide(
        self, exchange: Exchange, head: RequestHead, principal: Principal, match: RouteMatch, body: bytes | None
    ) -> Decision | None:
        """3. decide: the allowed decision, or None once the refusal (400/403) is answered and audited."""
        decision = await self.authorizer.authorize(
            principal,
            match,
            purpose=head.purpose,
            recipient=head.recipient,
            consent_ref=head.consent_ref,
            body=body,
            now=exchange.time,
        )
        exchange.decided = decision  # with its inputs, which the audit writer records (authz/replay.py)
        exchange.reason = decision.reason
        exchange.decision_us = _elapsed_us(exchange.clock)
        if not decision.allowed:
            await self._refuse(exchange, decision)
            return None
        return decision

    async def audit_writable(self, exchange: Exchange) -> bool:
        """4. audit, before anything is let through: a fail-closed store that cannot be written is a 503."""
        if self._fail_closed and not self.audit.healthy:
            exchange.reason = "audit_unavailable"
            await self._problem(exchange, 503, "the audit store cannot be written; refusing to proceed")
            return False
        return True

    def identity_headers(self, principal: Principal, decision: Decision, exchange: Exchange) -> dict[str, str]:
        """What the upstream is told about an allowed request, in either mode."""
        return {
            "X-Gateway-Decision-Id": exchange.decision_id,
            "X-Gateway-Tenant": principal.tenant,
            "X-Gateway-Principal": principal.id,
            "X-Gateway-Purpose": decision.purpose,
            "traceparent": format_traceparent(exchange.trace_id, exchange.span_id),
            # signed (gateway/assertion.py); a failure to sign raises: 500, never forwarded unsigned
            **({"X-Gateway-Assertion": self.assertions.sign_request(
                tenant=principal.tenant, principal=principal.id, principal_kind=principal.kind, roles=principal.roles,
                purpose=decision.purpose, decision_id=exchange.decision_id, route=decision.route,
                method=exchange.method, path=exchange.path, masks=decision.masked_pointers,
            )} if self.assertions is not None else {}),
        }

    def _upstream_headers(
        self, head: RequestHead, principal: Principal, decision: Decision, exchange: Exchange
    ) -> CIMultiDict[str]:
        headers: CIMultiDict[str] = CIMultiDict()
        for name, value in head.forward_headers:
            headers.add(name.decode("latin-1"), value.decode("latin-1"))
        if decision.inspects_response:
            headers.popall("accept-encoding", None)  # the review needs a body it can read
        if head.forward_xff:
            headers["X-Forwarded-For"] = head.forward_xff.decode("latin-1")
        headers["X-Forwarded-Proto"] = head.scheme
        if head.host:
            headers["X-Forwarded-Host"] = head.host
        if head.content_length is not None:
            headers["Content-Length"] = str(head.content_length)
        headers.update(self.identity_headers(principal, decision, exchange))
        return headers

    async def _respond_streamed(self, exchange: Exchange, response: Any) -> None:
        exchange.status = response.status
        exchange.reason = exchange.reason or "allowed"
        if not await self.audit_record(exchange):
            return
        headers = response_headers(response)
        if response.content_length is not None:
            headers.append((b"content-length", str(response.content_length).encode()))
        headers.append((b"x-decision-id", exchange.decision_id.encode()))
        exchange.started = True
        await exchange.send({"type": "http.response.start", "status": response.status, "headers": headers})
        try:
            await relay_body(response, exchange.send)
        except (TimeoutError, aiohttp.ClientError) as exc:
            # Too late for a status: leaving the body incomplete makes the server cut the connection,
            # which is how the client learns the response is truncated.
            logger.warning("upstream broke off the response to %s: %s", exchange.decision_id, type(exc).__name__)

    async def _respond_reviewed(self, exchange: Exchange, response: Any, decision: Decision) -> None:
        """Buffer the JSON answer, let the authorizer check the record's facts and mask it, then answer
        with it, or with the refusal the review returned (audited as the request's decision)."""
        encoding = response.headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            if _no_body(response):
                return await self._respond_streamed(exchange, response)
            exchange.reason = "unreadable_response"
            return await self._problem(
                exchange, 502, "the upstream answered in a form the gateway cannot check; refusing to pass it on"
            )
        try:
            raw = await read_bounded(response, self._max_masked_bytes)
        except Exception:
            exchange.reason = "upstream_error"
            return await self._problem(exchange, 502, "the upstream broke off the response")
        if raw is None:
            exchange.reason = "unreadable_response"
            return await self._problem(exchange, 502, "the upstream response is too large to check")
        review = self.authorizer.review_response(
            decision, response.status, response.headers.get("content-type", ""), raw, time.time()
        )
        exchange.review = review
        if review.refusal is not None:  # the refusal is the request's decision now
            exchange.refusal, exchange.reason = review.refusal, review.refusal.reason
            return await self._refuse(exchange, review.refusal)
        exchange.status = response.status
        exchange.reason = exchange.reason or "allowed"
        if not await self.audit_record(exchange):
            return
        headers = response_headers(response)
        headers.append((b"x-decision-id", exchange.decision_id.encode()))
        if review.pointers:
            headers.append((b"x-redacted-fields", ",".join(review.pointers).encode()))
        await exchange.respond(response.status, headers, review.body)

    # -- refusals ------------------------------------------------------------------------------------

    async def audit_record(self, exchange: Exchange) -> bool:
        """Write the record; on a fail-closed store failure answer 503 instead. True = go on."""
        record = exchange.record(_elapsed_us(exchange.clock))
        exchange.audited = True
        try:
            await self.audit.record(record)
        except AuditUnavailable:
            if not exchange.started:
                # the record stays queued (fail closed) and must say what the client was told
                record.status = exchange.status = 503
                await exchange.respond(
                    503,
                    [(b"content-type", PROBLEM_CONTENT_TYPE), (b"x-decision-id", record.decision_id.encode())],
                    problem_body(503, "the audit store cannot be written; refusing to proceed",
                                 decision_id=record.decision_id),
                )
            return False
        return True

    async def _problem(
        self, exchange: Exchange, status: int, detail: str, headers: list[tuple[bytes, bytes]] | None = None,
        **extra: Any,
    ) -> None:
        exchange.status = status
        if not await self.audit_record(exchange):
            return
        out = headers or []
        out.append((b"content-type", PROBLEM_CONTENT_TYPE))
        out.append((b"x-decision-id", exchange.decision_id.encode()))
        await exchange.respond(status, out, problem_body(status, detail, decision_id=exchange.decision_id, **extra))

    async def _refuse(self, exchange: Exchange, decision: Decision) -> None:
        """A policy refusal (403 with its reasons) or an input/answer the policy cannot judge (400, 502)."""
        if decision.status == 403:
            return await self._forbidden(exchange, decision.reasons)
        return await self._problem(exchange, decision.status, decision.detail, reason=decision.reason)

    async def _client_gone(self, exchange: Exchange) -> None:
        """The client hung up before an answer: nothing to send, but the request is still audited."""
        exchange.reason = "client_disconnected"
        exchange.status = 499
        await self.audit_record(exchange)

    async def _unauthenticated(self, exchange: Exchange, error: AuthenticationError) -> None:
        await self._problem(
            exchange, 401, error.description, [(b"www-authenticate", www_authenticate(error))], reason=error.reason
        )

    async def _forbidden(self, exchange: Exchange, reasons: list[dict[str, str]]) -> None:
        exchange.policies = tuple(r["policy"] for r in reasons)  # when no decision names its own
        await self._problem(exchange, 403, "the request is not permitted by policy", reasons=reasons)

    # -- requests the HTTP layer refused before the app saw them (gateway/http_protocol.py) ---------------

    def protocol_refusal(self, refusal: ProtocolRefusal) -> None:
        """Audit a 400/408/431 the HTTP protocol answered itself (it already sent X-Decision-Id)."""
        record = DecisionRecord(
            decision_id=refusal.decision_id, time=refusal.time, method=refusal.method,
            path=refusal.target.split("?", 1)[0], status=refusal.status, reason=refusal.reason, decision="deny",
        )
        record.extra.update(self.record_extra)
        task = asyncio.get_running_loop().create_task(self._record_refusal(record))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _record_refusal(self, record: DecisionRecord) -> None:
        with contextlib.suppress(AuditUnavailable):  # fail_closed keeps it queued and stores it as a 503
            await self.audit.record(record)

    # -- health, readiness, lifespan -----------------------------------------------------------------

    async def _health(self, send: Send) -> None:
        await _send_json(send, 200, {"status": "alive"})

    def readiness(self) -> dict[str, Any]:
        checks = {
            "keys": self.authenticator.ready,
            "policies": self.authorizer.ready,
            "audit": self.audit.healthy,
        }
        report: dict[str, Any] = {"status": "ready" if all(checks.values()) else "not ready", "checks": checks}
        if self.authorizer.last_error:
            report["policy_error"] = self.authorizer.last_error
        if self.audit.last_error:
            report["audit_error"] = self.audit.last_error
        report["policy_hash"] = self.authorizer.policy_hash
        if self.authorizer.shadow is not None:  # shadow mode: decided beside, never enforced
            report["shadow_policy_hash"] = self.authorizer.shadow.policy_hash
        if self.authorizer.shadow_error:
            report["shadow_error"] = self.authorizer.shadow_error
        return report

    async def _ready(self, send: Send) -> None:
        report = self.readiness()
        await _send_json(send, 200 if report["status"] == "ready" else 503, report)

    async def startup(self) -> None:
        await self.audit.start()
        await self.upstream.start()
        await self.authorizer.start()
        await self.authenticator.start()
        # Not possible outside the main thread (tests) or without SIGHUP (Windows); the file watch remains.
        with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self._reload_policies)

    async def shutdown(self) -> None:
        with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
        await self.authenticator.close()
        await self.authorizer.close()
        await self.upstream.close()
        await self.audit.close()
        if self.meter_provider is not None:  # flush the last metrics, bounded
            await asyncio.to_thread(self.meter_provider.shutdown, timeout_millis=3000)

    def _reload_policies(self) -> None:
        task = asyncio.get_running_loop().create_task(self._reload_in_thread())
        self._background.add(task)  # keep a reference until done
        task.add_done_callback(self._background.discard)

    async def _reload_in_thread(self) -> None:
        ok = await asyncio.to_thread(self.authorizer.reload)
        if ok:
            logger.info("policies reloaded on SIGHUP (hash %s)", self.authorizer.policy_hash)
        else:
            logger.error("policy reload failed, keeping the last good set: %s", self.authorizer.last_error)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    logger.exception("startup failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                try:
                    await self.shutdown()
                finally:
                    await send({"type": "lifespan.shutdown.complete"})
                return


def _elapsed_us(clock: float) -> int:
    return int((time.perf_counter() - clock) * 1_000_000)


def _no_body(response: Any) -> bool:
    return response.status in (204, 304) or response.content_length == 0


async def _send_json(send: Send, status: int, document: dict[str, Any]) -> None:
    body = json.dumps(document).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", JSON), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})
