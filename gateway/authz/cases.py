"""Policy cases: one request with its facts written out, evaluated exactly as the gateway would.

Used by ``gateway policy explain FILE`` and meant for the policy test runner. A case file is TOML
(``[[case]]`` tables) or JSON (one case object, a list of them, or ``{"case": [...]}``)::

    [tenants."3f2a6c1e-8d4b-4c7a-9e21-5b8d0f4a7c11"]     # facts the resolvers would fetch
    call_recording_enabled = true
    optouts = ["optout@example.com"]

    [[case]]
    name = "support agent sees a payment with the card number masked"
    principal = { kind = "user", id = "u-1", tenant = "3f2a6c1e-...", roles = ["Support.Agent"] }
    request = { method = "GET", path = "/tenants/3f2a6c1e-.../payments/pay-a-001" }
    purpose = "essential.service.operations.support"
    expect = { decision = "allow", policies = ["support-agent-reads"], masked = ["/card_number"] }

Instead of ``request`` (matched against the route maps, like a live request), a case may name the
Cedar request directly: ``action = "read"`` and ``resource = { type = "Payment", id = "p1",
tenant = "...", owner = "oid", categories = ["user.financial"], fields = [{ pointer = "/card_number",
category = "user.financial.credit_card", mask = "last4" }] }``.

Optional members: ``recipient``, ``consent`` (the record itself: ``{ id, subject, grantee, resources,
purpose, expires_at, tenant }``), ``body`` (a JSON value, sent as the request body), ``time``
(RFC 3339 or seconds since the epoch; default: now), ``tenant_facts`` (overrides ``[tenants]`` for
the resource's tenant; ``retention_days`` is the settings' table per kind of record), and ``expect``
with any of ``decision`` (allow | deny), ``status``, ``reason``, ``policies`` (the determining policy
ids, any order), ``masked`` (pointers, with ``*``) and ``withheld`` (array items withheld, e.g.
``["/contacts/4"]``).

``record`` (a table) is the record the upstream would answer with, for a route whose map reads facts
from it (``response_facts``): e.g. ``record = { created_at = "2016-03-14T09:26:53Z" }`` for a payment,
``record = { contacts = [{ created_at = "...", marketing_opt_out = true }] }`` for a list. It is
reviewed exactly as a live 2xx answer is (``review.review``; for a ``facts_from`` route, as the
fetched metadata is before forwarding), at the case's ``time``: the decision is the refusal when the
record's facts refuse it. Without ``record``, a case shows the decision made before forwarding.
"""

from __future__ import annotations

import json
import re
import time
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any

from gateway.adapters.routemap import FieldRule, Pointer, Route, RouteMatch
from gateway.authz.decide import decide_request, run_without_suspending, unmapped_reasons
from gateway.authz.decision import DEFAULT_DENY, Decision
from gateway.authz.emails import canonical_or_folded
from gateway.authz.engine import PolicyEngine
from gateway.authz.facts import ConsentFacts, TenantFacts
from gateway.authz.recordfacts import FactError, read_facts
from gateway.authz.review import ResponseReview, fail_closed, review, review_prefetched
from gateway.identity.principal import Principal

DECISIONS = ("allow", "deny")


class CaseError(ValueError):
    """A case file that cannot be read; the message starts with ``file:line:``."""


@dataclass(frozen=True, slots=True)
class Expectation:
    decision: str | None = None
    status: int | None = None
    reason: str | None = None
    policies: tuple[str, ...] | None = None
    masked: tuple[str, ...] | None = None
    withheld: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class Case:
    name: str
    source: str  # "file:line"
    principal: Principal
    method: str | None
    path: str | None
    action: str | None
    resource: Mapping[str, Any] | None
    purpose: str | None
    recipient: str | None
    consent: ConsentFacts | None
    body: bytes | None
    time: int
    tenants: Mapping[str, Mapping[str, Any]]
    expect: Expectation | None
    record: Any = None  # the JSON document the route's record facts are read from (None: not given)


def _json_ready(value: Any) -> Any:
    """A TOML value as JSON: date-times become RFC 3339 strings."""
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_ready(v) for v in value]
    return value


def _parse_time(value: Any, where: str) -> int:
    if value is None:
        return int(time.time())
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, datetime):
        return int(value.timestamp())
    if isinstance(value, str):
        try:
            return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp())
        except ValueError:
            pass
    raise CaseError(f"{where}: time must be RFC 3339 or seconds since the epoch")


def _principal(raw: Any, where: str) -> Principal:
    if not isinstance(raw, dict):
        raise CaseError(f"{where}: principal must be a table with kind, id, tenant, roles")
    kind = raw.get("kind", "user")
    if kind not in ("user", "app") or not isinstance(raw.get("id"), str) or not isinstance(raw.get("tenant"), str):
        raise CaseError(f"{where}: principal needs kind (user | app), id and tenant")
    roles = raw.get("roles", [])
    scopes = raw.get("scopes", ["access_as_user"] if kind == "user" else [])
    if not isinstance(roles, list) or not isinstance(scopes, list):
        raise CaseError(f"{where}: principal roles and scopes are lists")
    return Principal(
        kind=kind,
        id=raw["id"],
        tenant=raw["tenant"].lower(),
        roles=tuple(str(r) for r in roles),
        scopes=tuple(str(s) for s in scopes),
        groups=None,
        client_id=str(raw.get("client_id", "policy-case")),
        token_version="2.0",
        expires_at=float(2**31),
    )


def _consent(raw: Any, principal: Principal, where: str) -> ConsentFacts | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise CaseError(f"{where}: consent must be a table")
    try:
        return ConsentFacts(
            id=str(raw.get("id", "consent")),
            subject=str(raw["subject"]),
            tenant=str(raw.get("tenant", principal.tenant)).lower(),
            grantee=str(raw["grantee"]),
            resources=frozenset(str(r) for r in raw["resources"]),
            purpose=str(raw["purpose"]),
            expires_at=_parse_time(raw["expires_at"], where),
        )
    except KeyError as exc:
        raise CaseError(f"{where}: consent lacks {exc}") from None


def _expect(raw: Any, where: str) -> Expectation | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise CaseError(f"{where}: expect must be a table")
    decision = raw.get("decision")
    if decision is not None and decision not in DECISIONS:
        raise CaseError(f"{where}: expect.decision is allow or deny")
    policies = raw.get("policies")
    masked = raw.get("masked")
    withheld = raw.get("withheld")
    return Expectation(
        decision=decision,
        status=raw.get("status"),
        reason=raw.get("reason"),
        policies=tuple(policies) if policies is not None else None,
        masked=tuple(masked) if masked is not None else None,
        withheld=tuple(withheld) if withheld is not None else None,
    )


_CASE_KEYS = frozenset(
    {
        "name",
        "principal",
        "request",
        "action",
        "resource",
        "purpose",
        "recipient",
        "consent",
        "body",
        "time",
        "tenant_facts",
        "expect",
        "record",
    }
)


def parse_case(raw: Any, where: str, tenants: Mapping[str, Mapping[str, Any]]) -> Case:
    if not isinstance(raw, dict):
        raise CaseError(f"{where}: a case is a table")
    unknown = set(raw) - _CASE_KEYS
    if unknown:
        raise CaseError(f"{where}: unknown keys {', '.join(sorted(unknown))}")
    principal = _principal(raw.get("principal"), where)
    request = raw.get("request")
    method = path = None
    if request is not None:
        if not isinstance(request, dict) or not isinstance(request.get("path"), str):
            raise CaseError(f"{where}: request needs method and path")
        method, path = str(request.get("method", "GET")).upper(), request["path"]
    elif not isinstance(raw.get("action"), str) or not isinstance(raw.get("resource"), dict):
        raise CaseError(f"{where}: a case needs request = {{method, path}}, or action and resource")
    body = raw.get("body")
    record = raw.get("record")
    if record is not None and not isinstance(record, dict):
        raise CaseError(f"{where}: record must be a table (the record the upstream would answer with)")
    merged = dict(tenants)
    if isinstance(raw.get("tenant_facts"), dict):
        merged["*"] = raw["tenant_facts"]
    return Case(
        name=str(raw.get("name", where)),
        source=where,
        principal=principal,
        method=method,
        path=path,
        action=raw.get("action"),
        resource=raw.get("resource"),
        purpose=raw.get("purpose"),
        recipient=raw.get("recipient"),
        consent=_consent(raw.get("consent"), principal, where),
        body=None if body is None else json.dumps(body).encode(),
        time=_parse_time(raw.get("time"), where),
        tenants=MappingProxyType(merged),
        expect=_expect(raw.get("expect"), where),
        record=_json_ready(record) if record is not None else None,
    )


def load_cases(path: str | Path) -> list[Case]:
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    if path.suffix == ".json":
        try:
            doc: Any = json.loads(text)
        except ValueError as exc:
            raise CaseError(f"{path}:1: JSON: {exc}") from None
        if isinstance(doc, dict) and "case" in doc:
            tenants, items = doc.get("tenants", {}), doc["case"]
        elif isinstance(doc, list):
            tenants, items = {}, doc
        else:
            tenants, items = (doc.get("tenants", {}) if isinstance(doc, dict) else {}), [doc]
        return [parse_case(item, f"{path}:1", tenants) for item in items]
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CaseError(f"{path}:{getattr(exc, 'lineno', 1)}: TOML syntax: {exc}") from None
    tenants = doc.get("tenants", {})
    items = doc.get("case", [])
    if not items and ("principal" in doc):
        items = [{k: v for k, v in doc.items() if k != "tenants"}]
    case_lines = [n for n, line in enumerate(lines, 1) if re.match(r"\s*\[\[case\]\]", line)] or [1]
    return [
        parse_case(item, f"{path}:{case_lines[i] if i < len(case_lines) else 1}", tenants)
        for i, item in enumerate(items)
    ]


def synthetic_route(action: str, resource: Mapping[str, Any]) -> Route:
    """A route for a case that names its Cedar request directly (no route map involved)."""
    fields = tuple(
        FieldRule(Pointer.parse(str(f["pointer"])), str(f["category"]), f.get("mask", "redact"))
        for f in resource.get("fields", [])
    )
    categories = tuple(str(c) for c in resource.get("categories", []))
    pointers = ",".join(f.pointer.text for f in fields)
    return Route(
        id=":".join(("case", action, str(resource.get("type")), ",".join(categories), pointers)),
        method="CASE",
        template=f"({action} {resource.get('type')})",
        segments=(),
        action=action,
        resource_type=str(resource.get("type")),
        tenant_param="tenant" if resource.get("tenant") else None,
        id_param="id",
        owner_param="owner" if resource.get("owner") else None,
        categories=categories,
        fields=fields,
        lift=(),
        max_body_bytes=0,
        require=frozenset(),
        resolve=frozenset(),
        source="case",
        map_name="case",
    )


class CaseFacts:
    """The ``FactSource`` of a policy case (``gateway/authz/decide.py``): its tenant tables and its one
    consent, answered at once, so a case is decided by the same function as traffic."""

    def __init__(self, case: Case) -> None:
        self.case = case

    async def tenant_facts(self, tenant: str, route: Route) -> TenantFacts:
        return _tenant_facts(self.case, tenant, route)

    async def consent(self, consent_id: str) -> ConsentFacts | None:
        consent = self.case.consent
        return consent if consent is not None and consent.id == consent_id else None


def _tenant_facts(case: Case, tenant: str, route: Route) -> TenantFacts:
    raw = case.tenants.get("*") or case.tenants.get(tenant) or {}
    known = bool(raw.get("known", True))
    recording = raw.get("call_recording_enabled")
    optouts = raw.get("optouts")
    if optouts is None and "optouts" in route.resolve:
        optouts = []
    retention = None
    if route.tenant_retention is not None and known:
        table = raw.get("retention_days") or {}
        if not isinstance(table, dict):
            raise CaseError(f"{case.source}: tenant retention_days must be a table of day counts")
        retention = table.get(route.tenant_retention)
        if retention is not None and (not isinstance(retention, int) or isinstance(retention, bool) or retention < 0):
            raise CaseError(f"{case.source}: retention_days.{route.tenant_retention} must be a non-negative integer")
    return TenantFacts(
        tenant=tenant,
        known=known,
        call_recording_enabled=bool(recording) if recording is not None else None,
        optouts=frozenset(canonical_or_folded(str(o)) for o in optouts) if optouts is not None else None,
        retention_days=retention,
    )


def evaluate_case(engine: PolicyEngine, case: Case) -> Decision:
    """The decision the gateway would make for the case (route matching, input checks, Cedar, and the
    review of the case's ``record`` when it gives one)."""
    return evaluate_case_review(engine, case)[0]


def evaluate_case_review(engine: PolicyEngine, case: Case) -> tuple[Decision, ResponseReview | None]:
    """The final decision, and the review of the case's record as the upstream's answer (None when
    the case gives no record, or the record is checked before forwarding)."""
    decision = _decide_case(engine, case)
    if case.record is None:
        return decision, None
    route = engine.routes.by_id.get(decision.route_id)
    if route is None or not route.response_facts:
        raise CaseError(f"{case.source}: record given, but route {decision.route_id or '-'} reads no record facts")
    if not decision.allowed or decision.basis is None:
        return decision, None  # refused before the record is looked at
    if route.facts_from is not None:
        if not engine.reads_record(decision.basis.facts):
            return decision, None
        try:
            raw = read_facts(route.response_facts, case.record)
        except FactError as exc:  # what the resolver refuses live (fail closed)
            detail = "a fact the decision needs is unavailable"
            return fail_closed(decision, 403, "resolver_error", detail, f"record facts: {exc}"), None
        return review_prefetched(decision, raw, case.time), None
    outcome = review(decision, 200, "application/json", json.dumps(case.record).encode(), case.time)
    return outcome.refusal or decision, outcome


def _decide_case(engine: PolicyEngine, case: Case) -> Decision:
    principal = case.principal
    if case.path is not None:
        match = engine.routes.match(case.method or "GET", case.path)
        if match is None:
            return Decision(
                False,
                403,
                "unmapped",
                f"no route for {case.method} {case.path}",
                (DEFAULT_DENY,),
                unmapped_reasons(),
                policy_hash=engine.policy_hash,
            )
    else:
        assert case.action is not None and case.resource is not None
        route = synthetic_route(case.action, case.resource)
        _check_synthetic(engine, route)
        params = {"id": str(case.resource.get("id", ""))}
        if case.resource.get("tenant"):
            params["tenant"] = str(case.resource["tenant"]).lower()
        if case.resource.get("owner"):
            params["owner"] = str(case.resource["owner"])
        match = RouteMatch(route, "", MappingProxyType(params))
    decision = decide_request(
        engine, principal, match, CaseFacts(case),
        purpose=case.purpose, recipient=case.recipient, consent_ref=case.consent.id if case.consent else None,
        body=case.body, now=case.time,
    )  # fmt: skip
    return run_without_suspending(decision)


def _check_synthetic(engine: PolicyEngine, route: Route) -> None:
    for category in (*route.categories, *(f.category for f in route.fields)):
        if category not in engine.taxonomy.categories:
            raise CaseError(f"case: {category!r} is not a data category of the taxonomy")
    if not route.categories:
        raise CaseError("case: resource.categories must name at least one data category")


def mismatches(case: Case, decision: Decision, reviewed: ResponseReview | None = None) -> list[str]:
    """What differs from the case's expectation (empty when it holds or there is none)."""
    expect = case.expect
    if expect is None:
        return []
    out: list[str] = []
    actual = "allow" if decision.allowed else "deny"
    if expect.decision is not None and expect.decision != actual:
        out.append(f"decision: expected {expect.decision}, got {actual}")
    if expect.status is not None and expect.status != decision.status:
        out.append(f"status: expected {expect.status}, got {decision.status}")
    if expect.reason is not None and expect.reason != decision.reason:
        out.append(f"reason: expected {expect.reason}, got {decision.reason}")
    if expect.policies is not None and sorted(expect.policies) != sorted(decision.policy_ids):
        out.append(f"policies: expected {sorted(expect.policies)}, got {sorted(decision.policy_ids)}")
    if expect.masked is not None and sorted(expect.masked) != sorted(decision.masked_pointers):
        out.append(f"masked: expected {sorted(expect.masked)}, got {sorted(decision.masked_pointers)}")
    withheld = sorted(reviewed.withheld) if reviewed is not None else []
    if expect.withheld is not None and sorted(expect.withheld) != withheld:
        out.append(f"withheld: expected {sorted(expect.withheld)}, got {withheld}")
    return out
