"""One request as the gateway handles it: what it learned, in whole parts, and the record built from them.

The request path does not fill an audit record field by field. It keeps the parts it learns, each
once and whole: the request's identity (decision id, arrival time, method, path, trace context), the
verified ``Principal``, the route, the ``Decision`` and the answer's ``ResponseReview``, and the
outcome (the status sent and the reason code, which later steps may overwrite: a 502 after an allowed
decision). ``record()`` turns them into the ``DecisionRecord`` in one place, when the request is
audited; that is the only mapping from the request path's objects to the audit schema.

What it never holds: a token or a body (the principal and the decision hold neither).
"""

from __future__ import annotations

from typing import Any

from gateway.audit.record import DecisionRecord
from gateway.authz.decision import Decision
from gateway.authz.review import ResponseReview
from gateway.identity.principal import Principal
from gateway.proxy import Send


class Exchange:
    """The client side of one request: its parts, and whether the response has started."""

    __slots__ = (
        "audited", "clock", "decided", "decision_id", "decision_us", "extra", "method", "parent_span_id",
        "path", "policies", "principal", "reason", "refusal", "review", "route", "send", "span_id", "started",
        "status", "time", "trace_id", "upstream_ms",
    )  # fmt: skip

    def __init__(
        self, send: Send, *, decision_id: str, time: float, method: str, path: str, clock: float,
        extra: dict[str, str],
    ) -> None:  # fmt: skip
        self.send = send
        self.clock = clock  # perf_counter at arrival
        self.started = False
        self.audited = False
        # the request
        self.decision_id = decision_id
        self.time = time
        self.method = method
        self.path = path
        self.trace_id = ""
        self.parent_span_id = ""
        self.span_id = ""
        self.extra = extra
        # what was learned, each part once
        self.principal: Principal | None = None
        self.route = ""
        self.decided: Decision | None = None  # the decision before forwarding
        self.review: ResponseReview | None = None  # the second look at the answer
        self.refusal: Decision | None = None  # the review's refusal, which then is the request's decision
        self.policies: tuple[str, ...] = ()  # determining policies of a refusal made without a decision
        # the outcome
        self.status = 0
        self.reason = ""
        self.decision_us = 0
        self.upstream_ms = 0.0

    @property
    def decision(self) -> Decision | None:
        """The request's decision: the review's refusal if there was one, else the decision made."""
        return self.refusal or self.decided

    def record(self, duration_us: int) -> DecisionRecord:
        """The audit record of this request, built once from its parts (see the module docstring)."""
        return DecisionRecord(
            decision_id=self.decision_id, time=self.time, method=self.method, path=self.path,
            trace_id=self.trace_id, span_id=self.span_id, parent_span_id=self.parent_span_id, route=self.route,
            status=self.status, reason=self.reason, decision_us=self.decision_us, upstream_ms=self.upstream_ms,
            duration_us=duration_us, extra=self.extra,
            replay=(self.decided, self.review) if self.decided is not None else None,
            **_principal_fields(self.principal),
            **_decision_fields(self.decision, None if self.refusal is not None else self.review, self.policies),
        )  # fmt: skip

    async def respond(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        self.started = True
        headers.append((b"content-length", str(len(body)).encode()))
        await self.send({"type": "http.response.start", "status": status, "headers": headers})
        await self.send({"type": "http.response.body", "body": body, "more_body": False})


def _principal_fields(principal: Principal | None) -> dict[str, Any]:
    if principal is None:
        return {}
    return {
        "tenant": principal.tenant, "principal_kind": principal.kind, "principal_id": principal.id,
        "client_id": principal.client_id, "roles": principal.roles,
    }  # fmt: skip


def _decision_fields(
    decision: Decision | None, passed: ResponseReview | None, policies: tuple[str, ...]
) -> dict[str, Any]:
    """The decision's part of the record; ``passed`` is the review of an answer that was let through
    (its masked fields, and the forbids that withheld list items, count among the policies)."""
    if decision is None:
        return {"policies": policies}
    own = decision.policy_ids or policies
    if passed is not None and passed.policies:
        own = (*own, *passed.policies)
    return {
        "decision": "allow" if decision.allowed else "deny", "action": decision.action,
        "resource_type": decision.resource_type, "resource_id": decision.resource_id,
        "resource_tenant": decision.resource_tenant, "categories": decision.categories,
        "purpose": decision.purpose, "recipient": decision.recipient, "consent_ref": decision.consent_ref,
        "policies": own, "clauses": decision.clauses, "policy_hash": decision.policy_hash,
        "masked_fields": passed.pointers if passed is not None else (),
    }  # fmt: skip
