"""Invariants of the shipped policies for every request: generated principals, roles, purposes,
tenants, records and consents, decided by the real engine (route matching, facts, cedarpy) through
``gateway.authz.cases``, the path ``gateway policy test`` uses.

- no purpose under ``marketing.advertising`` or ``train_ai_system`` ever reads Gmail data;
- no principal of one tenant ever reaches another tenant's records;
- no person reads someone else's e-mail without one of Google Limited Use's exceptions (the owner's
  affirmative agreement for that message, security, the law; aggregated data is never a message);
- no card number reaches a principal in the support role unmasked;
- no record at least as old as its retention (the shorter of the manifests' and its tenant's) is
  given, in full or as a list item, for any purpose but a legal obligation;
- no contact who opted out of marketing is given for a marketing purpose.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.adapters.routemap import Route
from gateway.authz.cases import Case, evaluate_case, evaluate_case_review, parse_case
from gateway.authz.decision import Decision
from gateway.authz.review import ResponseReview
from tests.policies.support import ALICE, BOB, CAROL, EMPLOYEE_ROLES, PEOPLE, ROLES, TENANTS, shipped_engine

NOW = 1_790_000_000  # 2026-09-21, seconds since the epoch
SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TENANT_FACTS = {t: {"call_recording_enabled": t == TENANTS[0], "optouts": ["optout@example.com"]} for t in TENANTS}
RECORD_IDS = ("m-1", "m-2", "ct-a-001", "pay-a-005", "call-b-003", "sv-a-001", "consent-1")
RECIPIENTS = (None, "salesforce", "zendesk", "hubspot", "pardot", "dropbox")
EMAILS = ("someone@example.com", "optout@example.com", "OptOut@Example.com")

ENGINE = shipped_engine()
PURPOSES = tuple(sorted(ENGINE.taxonomy.purposes.parents))
FORBIDDEN_FOR_GMAIL = tuple(
    p for p in PURPOSES if p == "train_ai_system" or p.startswith(("marketing.advertising", "train_ai_system."))
)
ROUTES = tuple(sorted(ENGINE.routes.routes, key=lambda r: r.id))
GMAIL_ROUTES = tuple(r for r in ROUTES if r.resource_type == "GmailMessage")
TENANT_ROUTES = tuple(r for r in ROUTES if r.tenant_param is not None)


@dataclass(frozen=True)
class Asked:
    case: Case
    decision: Decision
    route: Route
    owner: str | None  # the mailbox owner the path names ("me" resolved)


# Half the purposes drawn are the contract's vocabulary (what real callers declare), half any data use.
COMMON_PURPOSES = (
    "essential.service", "essential.service.operations.support", "essential.service.operations",
    "essential.service.security", "essential.legal_obligation", "essential.service.payment_processing",
    "analytics.reporting", "marketing.communications.email", "marketing.advertising", "sales",
    "third_party_sharing", "train_ai_system",
)  # fmt: skip
any_purpose = st.one_of(st.sampled_from(COMMON_PURPOSES), st.sampled_from(PURPOSES))
# The contract's role model: a role with the purpose it works for, so generated callers often hold a
# grant and the properties are tested against allowed requests, not only refusals.
ROLE_PURPOSES = (
    ("Support.Agent", "essential.service.operations.support"), ("Sales.Rep", "sales"),
    ("Sales.Rep", "essential.service"), ("Billing.Admin", "essential.service.payment_processing"),
    ("Marketing.Manager", "marketing.communications.email"), ("Analyst", "analytics.reporting"),
    ("Security.Investigator", "essential.service.security"), ("Legal.Officer", "essential.legal_obligation"),
    ("Auditor", "essential.legal_obligation"), ("Engineering.Operator", "essential.service.operations"),
    ("Service.Mail", "essential.service"), ("Service.Payments", "essential.service.payment_processing"),
    ("Service.Analytics", "analytics.reporting"), ("Service.CrmSync", "essential.service"),
)  # fmt: skip
any_roles = st.lists(st.sampled_from(ROLES), max_size=3, unique=True)
employee_roles = st.lists(st.sampled_from(EMPLOYEE_ROLES), max_size=2, unique=True)


@st.composite
def consents(draw: st.DrawFn, principal: dict[str, Any]) -> dict[str, Any] | None:
    if not draw(st.booleans()):
        return None
    return {
        "id": "consent-1",
        "subject": draw(st.sampled_from(PEOPLE)),
        "tenant": draw(st.sampled_from((principal["tenant"], *TENANTS))),
        "grantee": draw(st.sampled_from((*PEOPLE, *ROLES))),
        "resources": draw(st.lists(st.sampled_from(RECORD_IDS), max_size=3, unique=True)),
        "purpose": draw(any_purpose),
        "expires_at": NOW + draw(st.integers(-3600, 3600)),
    }


@st.composite
def requests(
    draw: st.DrawFn,
    routes: tuple[Route, ...] = ROUTES,
    purposes: st.SearchStrategy[str] = any_purpose,
    roles: st.SearchStrategy[list[str]] = any_roles,
    kinds: tuple[str, ...] = ("user", "app"),
    keep_purpose: bool = False,
) -> Asked:
    principal = {
        "kind": draw(st.sampled_from(kinds)),
        "id": draw(st.sampled_from(PEOPLE)),
        "tenant": draw(st.sampled_from(TENANTS)),
        "roles": draw(roles),
    }
    purpose = draw(purposes)
    if draw(st.booleans()):  # a caller working in its role, for its role's purpose
        role, role_purpose = draw(st.sampled_from(ROLE_PURPOSES))
        principal["roles"] = [role, *(r for r in principal["roles"] if r != role)]
        if not keep_purpose:
            purpose = role_purpose
        if role.startswith("Service.") and len(kinds) > 1:
            principal["kind"] = "app"
    route = draw(st.sampled_from(routes))
    params: dict[str, str] = {}
    for segment in route.segments:
        if segment.param is None:
            continue
        if segment.param == route.tenant_param:
            params[segment.param] = draw(st.sampled_from(TENANTS))
        elif segment.param == route.owner_param:
            params[segment.param] = draw(st.sampled_from(("me", *PEOPLE)))
        else:
            params[segment.param] = draw(st.sampled_from(RECORD_IDS))
    path = "/" + "/".join(s.literal if s.literal is not None else params[str(s.param)] for s in route.segments)
    raw: dict[str, Any] = {
        "name": "generated",
        "principal": principal,
        "request": {"method": route.method, "path": path},
        "purpose": purpose,
        "time": NOW,
    }
    recipient = draw(st.sampled_from(RECIPIENTS))
    if recipient is not None:
        raw["recipient"] = recipient
    consent = draw(consents(principal))
    if consent is not None:
        raw["consent"] = consent
    if route.lift:
        raw["body"] = {"email": draw(st.sampled_from(EMAILS))}
    case = parse_case(raw, "generated", TENANT_FACTS)
    owner = params.get(route.owner_param) if route.owner_param else None
    if owner == "me":
        owner = principal["id"]
    return Asked(case, evaluate_case(ENGINE, case), route, owner)


@SETTINGS
@given(requests(routes=GMAIL_ROUTES, purposes=st.sampled_from(FORBIDDEN_FOR_GMAIL), keep_purpose=True))
def test_no_advertising_or_ai_training_purpose_reads_gmail(asked: Asked) -> None:
    assert not asked.decision.allowed, asked.case


@SETTINGS
@given(requests(routes=TENANT_ROUTES))
def test_no_principal_reaches_another_tenants_records(asked: Asked) -> None:
    if asked.decision.allowed:
        assert asked.decision.resource_tenant == asked.case.principal.tenant, asked.case


def _limited_use_exception(asked: Asked) -> bool:
    case, principal = asked.case, asked.case.principal
    ancestors = {case.purpose, *ENGINE.taxonomy.purposes.ancestors.get(str(case.purpose), ())}
    if asked.owner == principal.id:
        return True  # the mailbox is the reader's own: the mail client itself, not "a human reading"
    if {"essential.service.security", "essential.legal_obligation"} & ancestors:
        return True
    consent = case.consent
    return (
        consent is not None
        and consent.tenant == principal.tenant
        and consent.subject == asked.owner
        and asked.decision.resource_id in consent.resources
        and (consent.grantee == principal.id or consent.grantee in principal.roles)
        and consent.purpose in ancestors
        and case.time < consent.expires_at
    )


@SETTINGS
@given(requests(routes=GMAIL_ROUTES, roles=employee_roles, kinds=("user",)))
def test_no_person_reads_email_without_a_limited_use_exception(asked: Asked) -> None:
    if asked.case.principal.kind == "user" and asked.route.action in ("read", "list") and asked.decision.allowed:
        assert _limited_use_exception(asked), asked.case


PAYMENT_READS = tuple(r for r in ROUTES if r.id == "payments.read")


@SETTINGS
@given(
    requests(
        routes=PAYMENT_READS,
        roles=any_roles.map(lambda r: ["Support.Agent", *(x for x in r if x != "Support.Agent")]),
    )
)
def test_no_card_number_reaches_a_support_role_unmasked(asked: Asked) -> None:
    assert "Support.Agent" in asked.case.principal.roles
    if asked.decision.allowed:
        assert "/card_number" in asked.decision.masked_pointers, asked.case


def test_the_generators_reach_allowed_requests() -> None:
    """The properties above are only worth something if generated requests are sometimes allowed."""
    samples = {
        "gmail": [
            ("user", ALICE, "me", "essential.service", ()),
            ("user", CAROL, ALICE, "essential.service.security", ("Security.Investigator",)),
        ],
        "payments": [("user", BOB, None, "essential.service.operations.support", ("Support.Agent",))],
    }
    for kind, oid, owner, purpose, roles in samples["gmail"]:
        raw = {
            "principal": {"kind": kind, "id": oid, "tenant": TENANTS[0], "roles": list(roles)},
            "request": {"method": "GET", "path": f"/gmail/v1/users/{owner}/messages/m-1"},
            "purpose": purpose,
            "time": NOW,
        }
        assert evaluate_case(ENGINE, parse_case(raw, "sample", TENANT_FACTS)).allowed
    for kind, oid, _, purpose, roles in samples["payments"]:
        raw = {
            "principal": {"kind": kind, "id": oid, "tenant": TENANTS[0], "roles": list(roles)},
            "request": {"method": "GET", "path": f"/tenants/{TENANTS[0]}/payments/pay-a-005"},
            "purpose": purpose,
            "time": NOW,
        }
        decision = evaluate_case(ENGINE, parse_case(raw, "sample", TENANT_FACTS))
        assert decision.allowed and "/card_number" in decision.masked_pointers


# --- record facts: retention and opt-outs -----------------------------------------------------------

AGE_ROUTES = tuple(r for r in ROUTES if any(f.name == "age_days" for f in r.response_facts))
OPT_OUT_ROUTES = tuple(r for r in ROUTES if any(f.name == "marketing_opt_out" for f in r.response_facts))
LEGAL = "essential.legal_obligation"


@dataclass(frozen=True)
class Reviewed:
    case: Case
    decision: Decision
    review: ResponseReview | None
    route: Route
    age_days: int
    opted_out: bool
    tenant_retention: int | None


def _place(document: dict[str, Any], tokens: tuple[str, ...], value: Any) -> None:
    """Put ``value`` at a pointer's tokens (``*`` = the first item of an array)."""
    node: Any = document
    for token, following in zip(tokens, (*tokens[1:], None), strict=True):
        if following is None:
            node[token] = value
        elif following == "*":
            node = node.setdefault(token, [{}])[0]
        elif token != "*":
            node = node.setdefault(token, {})


def _record(route: Route, age_days: int, jitter: int, opted_out: bool) -> dict[str, Any]:
    document: dict[str, Any] = {}
    for rule in route.response_facts:
        value: Any = NOW - age_days * 86400 - jitter if rule.kind == "age" else opted_out
        _place(document, rule.pointer.tokens, value)
    return document


@st.composite
def reviewed_requests(draw: st.DrawFn, routes: tuple[Route, ...], purposes: st.SearchStrategy[str]) -> Reviewed:
    role, role_purpose = draw(st.sampled_from(ROLE_PURPOSES))
    tenant = draw(st.sampled_from(TENANTS))
    principal = {"kind": "app" if role.startswith("Service.") else "user", "id": draw(st.sampled_from(PEOPLE)),
                 "tenant": tenant, "roles": [role]}  # fmt: skip
    purpose = role_purpose if draw(st.booleans()) else draw(purposes)
    route = draw(st.sampled_from(routes))
    params = {s.param: tenant if s.param == route.tenant_param else draw(st.sampled_from(RECORD_IDS))
              for s in route.segments if s.param}  # fmt: skip
    path = "/" + "/".join(s.literal if s.literal is not None else params[str(s.param)] for s in route.segments)
    age_days = draw(st.integers(0, 6000))
    opted_out = draw(st.booleans())
    retention = draw(st.one_of(st.none(), st.integers(0, 4000)))
    facts = {"call_recording_enabled": True, "optouts": []}
    if retention is not None and route.tenant_retention is not None:
        facts["retention_days"] = {route.tenant_retention: retention}
    raw: dict[str, Any] = {
        "name": "generated", "principal": principal, "request": {"method": route.method, "path": path},
        "purpose": purpose, "time": NOW, "tenant_facts": facts,
        "record": _record(route, age_days, draw(st.integers(0, 86399)), opted_out),
    }  # fmt: skip
    if route.require:
        raw["recipient"] = "salesforce"
    case = parse_case(raw, "generated", TENANT_FACTS)
    decision, review = evaluate_case_review(ENGINE, case)
    tenant_retention = retention if route.tenant_retention is not None else None
    return Reviewed(case, decision, review, route, age_days, opted_out, tenant_retention)


def _given(reviewed: Reviewed) -> bool:
    """Whether the record reached the caller: the answer allowed, and the record not withheld."""
    if not reviewed.decision.allowed:
        return False
    return reviewed.review is None or not reviewed.review.withheld


@SETTINGS
@given(reviewed_requests(AGE_ROUTES, any_purpose))
def test_no_record_past_its_retention_is_given_but_for_a_legal_obligation(reviewed: Reviewed) -> None:
    limits = [ENGINE.entities.route_entities(reviewed.route).retention_days, reviewed.tenant_retention]
    known = [days for days in limits if days is not None]
    purpose = str(reviewed.case.purpose)
    legal = LEGAL in {purpose, *ENGINE.taxonomy.purposes.ancestors.get(purpose, ())}
    if known and reviewed.age_days >= min(known) and not legal:
        assert not _given(reviewed), reviewed.case


@SETTINGS
@given(reviewed_requests(OPT_OUT_ROUTES, st.sampled_from(tuple(p for p in PURPOSES if p.startswith("marketing")))))
def test_no_contact_who_opted_out_is_given_for_marketing(reviewed: Reviewed) -> None:
    if reviewed.opted_out and str(reviewed.case.purpose).startswith("marketing"):
        assert not _given(reviewed), reviewed.case


def test_the_record_generators_reach_given_records() -> None:
    """Records within retention and contacts not opted out are given: the properties can fail."""
    route = next(r for r in ROUTES if r.id == "contacts.read")
    raw = {
        "principal": {"kind": "user", "id": BOB, "tenant": TENANTS[0], "roles": ["Marketing.Manager"]},
        "request": {"method": "GET", "path": f"/tenants/{TENANTS[0]}/contacts/ct-a-001"},
        "purpose": "marketing.communications.email", "time": NOW,
        "record": _record(route, 10, 0, False),
    }  # fmt: skip
    decision, review = evaluate_case_review(ENGINE, parse_case(raw, "sample", TENANT_FACTS))
    assert decision.allowed and review is not None and review.refusal is None
    raw["record"] = _record(route, 10, 0, True)
    assert not evaluate_case(ENGINE, parse_case(raw, "sample", TENANT_FACTS)).allowed
