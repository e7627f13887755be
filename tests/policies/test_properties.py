"""Invariants of the shipped policies for every request: generated principals, roles, purposes,
tenants, records and consents, decided by the real engine (route matching, facts, cedarpy) through
``gateway.authz.cases``, the path ``gateway policy test`` uses.

- no purpose under ``marketing.advertising`` or ``train_ai_system`` ever reads Gmail data;
- no principal of one tenant ever reaches another tenant's records;
- no person reads someone else's e-mail without one of Google Limited Use's exceptions (the owner's
  affirmative agreement for that message, security, the law; aggregated data is never a message);
- no card number reaches a principal in the support role unmasked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.routemap import Route
from gateway.authz.cases import Case, evaluate_case, parse_case
from gateway.authz.decision import Decision
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
