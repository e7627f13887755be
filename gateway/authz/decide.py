"""From a matched request to its decision: the one fact builder that traffic and policy tests share.

``decide_request`` checks the request's inputs (purpose, recipient, consent reference, lifted body),
builds the Cedar facts (the tenant, the owner: ``me`` is the caller; a consent only counts in the
caller's own tenant; ``consent_owner`` routes take their owner from the consent they name), asks the
engine and builds the ``Decision``. The facts that live outside the request come from a
``FactSource``: the resolvers over HTTP for traffic (``gateway/authz/resolvers.py`` ``ResolvedFacts``),
the case's own tables for ``gateway policy test`` and ``explain`` (``gateway/authz/cases.py``), so a
policy test runs the production path and nothing is patched.

What it never does: fetch a record's facts (the authorizer does that for ``facts_from`` routes, and
the review reads them from the answer), remember a decision (the authorizer's memo does), or raise on
bad input (a 400 decision) or on a fact it cannot have (``FactUnavailable``: a 403 that says so).
"""

from __future__ import annotations

import json
import re
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from gateway.adapters.jsonpointer import MISSING, resolve
from gateway.adapters.routemap import LiftRule, Route, RouteMatch
from gateway.authz.decision import (
    DEFAULT_DENY,
    GATEWAY_SOURCE,
    Basis,
    Decision,
    Verdict,
    fail_closed_reason,
)
from gateway.authz.emails import canonical_email
from gateway.authz.engine import PolicyEngine
from gateway.authz.facts import ConsentFacts, Facts, TenantFacts
from gateway.authz.manifests import RECIPIENT
from gateway.identity.principal import Principal

T = TypeVar("T")

CONSENT_REF = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
MAX_PURPOSE_LENGTH = 128


def unmapped_reasons() -> list[dict[str, str]]:
    return [
        {
            "policy": DEFAULT_DENY,
            "source": "route maps",
            "clause": "No route of the route maps matches this method and path; unmapped requests are denied.",
        }
    ]


class InvalidInput(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def lift_body(rules: tuple[LiftRule, ...], body: bytes | None) -> tuple[tuple[str, str], ...]:
    """The lifted ``(name, value)`` pairs; ``InvalidInput`` for a malformed body or field."""
    if not rules:
        return ()
    document: Any = None
    if body:
        try:
            document = json.loads(body)
        except (UnicodeDecodeError, ValueError, RecursionError):  # RecursionError: nested too deep
            raise InvalidInput("bad_body", "the request body is not valid JSON") from None
    lifted: list[tuple[str, str]] = []
    for rule in rules:
        node = resolve(document, rule.pointer.tokens)
        if node is MISSING or node is None:
            if rule.required:
                raise InvalidInput("bad_body", f"the request body needs {rule.pointer.text}")
            continue
        if not isinstance(node, str) or not node.strip() or len(node) > rule.max_length:
            raise InvalidInput("bad_body", f"{rule.pointer.text} must be a string of 1 to {rule.max_length} characters")
        value = node.strip()
        if rule.kind == "email":
            try:
                value = canonical_email(value)
            except ValueError as exc:
                raise InvalidInput("bad_body", f"{rule.pointer.text} must be an e-mail address: {exc}") from None
        lifted.append((rule.name, value))
    return tuple(sorted(lifted))


@dataclass(frozen=True, slots=True)
class CheckedInputs:
    purpose: str
    recipient: str | None
    consent_ref: str | None
    body: tuple[tuple[str, str], ...]


def check_inputs(
    engine: PolicyEngine,
    route: Route,
    purpose: str | None,
    recipient: str | None,
    consent_ref: str | None,
    body: bytes | None,
) -> CheckedInputs:
    """The request's headers and lifted body, checked and normalised; ``InvalidInput`` (a 400) if not."""
    if purpose is None or not purpose.strip():
        raise InvalidInput("missing_purpose", "X-Purpose is required: the purpose of processing")
    purpose = purpose.strip()
    if len(purpose) > MAX_PURPOSE_LENGTH or purpose not in engine.taxonomy.purposes:
        raise InvalidInput("unknown_purpose", f"X-Purpose {purpose[:MAX_PURPOSE_LENGTH]!r} is not a known purpose")
    return CheckedInputs(
        purpose=purpose,
        recipient=_check_recipient(recipient, "recipient" in route.require),
        consent_ref=_check_consent_ref(consent_ref, "consent" in route.require),
        body=lift_body(route.lift, body),
    )


def make_decision(
    engine: PolicyEngine, facts: Facts, verdict: Verdict, cached: bool, consent_ref: str | None,
    subjects: tuple[str, ...] = (),
) -> Decision:
    route = facts.route
    reviews_record = (
        verdict.allowed and bool(route.response_facts) and route.facts_from is None and engine.reads_record(facts)
    )
    return Decision(
        allowed=verdict.allowed,
        status=verdict.status,
        reason=verdict.reason,
        detail=verdict.detail,
        policy_ids=verdict.policy_ids,
        reasons=list(verdict.reasons),
        masks=verdict.masks,
        action=route.action,
        resource_type=route.resource_type,
        resource_id=facts.resource_id,
        resource_tenant=facts.tenant,
        route=route.template,
        route_id=route.id,
        categories=route.categories,
        purpose=facts.purpose,
        recipient=facts.recipient or "",
        consent_ref=consent_ref or "",
        policy_hash=engine.policy_hash,
        cached=cached,
        reviews_record=reviews_record,
        basis=Basis(engine, facts),
        subjects=subjects,
        reads_subjects=route.subjects.reads_answer,
    )


def refusal(
    engine: PolicyEngine,
    match: RouteMatch,
    status: int,
    reason: str,
    detail: str,
    purpose: str | None,
    recipient: str | None,
    consent_ref: str | None,
    reasons: list[dict[str, str]] | None = None,
) -> Decision:
    """A decision made before Cedar was asked: bad input (400) or a fact that could not be had (403)."""
    if reasons is None:
        reasons = [{"policy": "request-check", "source": GATEWAY_SOURCE, "clause": detail}]
    route = match.route
    return Decision(
        allowed=False,
        status=status,
        reason=reason,
        detail=detail,
        policy_ids=tuple(r["policy"] for r in reasons),
        reasons=reasons,
        action=route.action,
        resource_type=route.resource_type,
        resource_id=match.resource_id,
        resource_tenant=match.tenant or "",
        route=route.template,
        route_id=route.id,
        categories=route.categories,
        purpose=(purpose or "")[:MAX_PURPOSE_LENGTH],
        recipient=(recipient or "")[:64],
        consent_ref=(consent_ref or "")[:128],
        policy_hash=engine.policy_hash,
    )


def _check_recipient(recipient: str | None, required: bool) -> str | None:
    if recipient is None or not recipient.strip():
        if required:
            raise InvalidInput("missing_recipient", "X-Recipient is required on this route: the receiving party")
        return None
    value = recipient.strip().lower()
    if not RECIPIENT.fullmatch(value):
        raise InvalidInput("bad_recipient", "X-Recipient must be a lower-case identifier such as 'salesforce'")
    return value


def _check_consent_ref(consent_ref: str | None, required: bool) -> str | None:
    if consent_ref is None or not consent_ref.strip():
        if required:
            raise InvalidInput("missing_consent", "X-Consent-Ref is required on this route")
        return None
    value = consent_ref.strip()
    if not CONSENT_REF.fullmatch(value):
        raise InvalidInput("bad_consent_ref", "X-Consent-Ref must be a consent id")
    return value


class FactUnavailable(Exception):
    """A fact the decision needs could not be had; ``clause`` says why (the refusal's reason)."""

    def __init__(self, clause: str) -> None:
        super().__init__(clause)
        self.clause = clause


class FactSource(Protocol):
    """Where the facts that are not in the request come from. Raises ``FactUnavailable`` when it
    cannot say (the request is then refused); returns None for a consent that does not exist."""

    async def tenant_facts(self, tenant: str, route: Route) -> TenantFacts: ...

    async def consent(self, consent_id: str) -> ConsentFacts | None: ...


async def decide_request(
    engine: PolicyEngine,
    principal: Principal,
    match: RouteMatch,
    source: FactSource,
    *,
    purpose: str | None,
    recipient: str | None,
    consent_ref: str | None,
    body: bytes | None,
    now: float,
) -> Decision:
    """The decision for one matched request (see the module docstring). Never raises but what
    ``source`` raises other than ``FactUnavailable``."""
    route = match.route
    try:
        inputs = check_inputs(engine, route, purpose, recipient, consent_ref, body)
    except InvalidInput as exc:
        return refusal(engine, match, 400, exc.reason, exc.detail, purpose, recipient, consent_ref)
    tenant = match.tenant or principal.tenant
    owner = principal.id if match.owner == "me" else match.owner
    try:
        tenant_facts = await source.tenant_facts(tenant, route)
        consent = None
        if inputs.consent_ref is not None:
            consent = await source.consent(inputs.consent_ref)
            if consent is not None and consent.tenant != principal.tenant:
                consent = None  # a consent recorded in another tenant means nothing here
        if "consent_owner" in route.resolve:
            record = await source.consent(match.resource_id) if match.resource_id else None
            owner = record.subject if record is not None and record.tenant == principal.tenant else None
    except FactUnavailable as exc:
        return refusal(
            engine, match, 403, "resolver_error", "a fact the decision needs is unavailable",
            inputs.purpose, inputs.recipient, inputs.consent_ref, reasons=[fail_closed_reason(exc.clause)],
        )  # fmt: skip
    facts = Facts(
        principal=principal,
        route=route,
        resource_id=match.resource_id,
        tenant=tenant,
        owner=owner,
        purpose=inputs.purpose,
        recipient=inputs.recipient,
        consent=consent,
        body=inputs.body,
        tenant_facts=tenant_facts,
        time=int(now),
    )
    verdict, cached = engine.decide(facts)
    subjects: tuple[str, ...] = ()
    if route.subjects.from_request:
        subjects = route.subjects.request_keys(match.params, principal.id, inputs.body)
    return make_decision(engine, facts, verdict, cached, inputs.consent_ref, subjects)


def run_without_suspending(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine whose awaits all complete at once (a case's ``FactSource``), without an event
    loop; ``RuntimeError`` if it suspends."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    coroutine.close()
    raise RuntimeError("a fact source that must answer at once suspended")
