"""Slicing, context trimming and sharing decisions across record ids never change a decision.

For generated requests, the engine's answer (sliced policy set, trimmed context, record id left out
when no policy reads it) must equal Cedar's answer over the whole policy set with the full context,
the real record id and schema validation of the request.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cedarpy
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.authz.engine import PolicyEngine
from gateway.authz.entities import context_json, request_dict
from gateway.authz.facts import ConsentFacts, Facts
from gateway.authz.policyset import build_policy_set
from tests.authz.support import (
    NOW,
    ROUTE_MAPS,
    SHIPPED_POLICIES,
    USER_1,
    USER_2,
    A,
    B,
    app,
    facts,
    generated_policies,
    load_engine,
    register_generated_roles,
    user,
)

ENGINE = load_engine()
#: The base set alone, and the policies directory as shipped (base and packs).
ENGINES = {"base": ENGINE, "shipped": PolicyEngine.load(SHIPPED_POLICIES, ROUTE_MAPS, validate_requests=True)}
FULL = {name: build_policy_set(engine.policies.policies) for name, engine in ENGINES.items()}
ROLES = [
    "Support.Agent",
    "Sales.Rep",
    "Billing.Admin",
    "Marketing.Manager",
    "Analyst",
    "Security.Investigator",
    "Legal.Officer",
    "Auditor",
    "Engineering.Operator",
    "Service.Mail",
    "Service.Payments",
    "Service.Analytics",
    "Service.CrmSync",
]
PURPOSES = [
    "essential.service",
    "essential.service.operations.support",
    "essential.service.security",
    "essential.service.payment_processing",
    "essential.legal_obligation",
    "analytics.reporting",
    "marketing.communications.email",
    "marketing.advertising",
    "sales",
    "train_ai_system",
]
ROUTES = sorted(ENGINE.routes.by_id)


@st.composite
def requests(draw: st.DrawFn) -> Facts:
    roles = tuple(draw(st.lists(st.sampled_from(ROLES), max_size=2, unique=True)))
    tenant = draw(st.sampled_from([A, B]))
    oid = draw(st.sampled_from([USER_1, USER_2]))
    principal = user(*roles, tenant=tenant, oid=oid) if draw(st.booleans()) else app(*roles, tenant=tenant)
    if principal.kind == "user" and draw(st.integers(0, 4)) == 0:
        principal = dataclasses.replace(principal, scopes=())
    route = draw(st.sampled_from(ROUTES))
    consent = None
    if draw(st.booleans()):
        consent = ConsentFacts(
            "c1",
            draw(st.sampled_from([USER_1, USER_2])),
            A,
            draw(st.sampled_from([USER_1, "Support.Agent"])),
            frozenset({"m1"}),
            draw(st.sampled_from(PURPOSES)),
            NOW + draw(st.sampled_from([-10, 10])),
        )
    return facts(
        ENGINE,
        principal,
        route,
        draw(st.sampled_from(["", "m1", "m2", "ct-a-001"])),
        tenant=draw(st.sampled_from([A, B])),
        owner=draw(st.sampled_from([None, USER_1, USER_2])),
        purpose=draw(st.sampled_from(PURPOSES)),
        recipient=draw(st.sampled_from([None, "salesforce", "zendesk", "pardot"])),
        consent=consent,
        body=draw(st.sampled_from([(), (("email", "optout@example.com"),), (("email", "a@example.com"),)])),
        recording=draw(st.sampled_from([True, False, None])),
        optouts=draw(st.sampled_from([None, frozenset({"optout@example.com"})])),
    )


def reference(name: str, f: Facts) -> tuple[bool, tuple[str, ...]]:
    engine = ENGINES[name]
    if engine.roles.check(f.principal.kind, f.principal.roles).mismatched:
        return False, ("role-kind-mismatch",)  # refused before any policy, sliced or not
    entities = cedarpy.Entities.from_json_str(engine.entities.entities_json(f, f.resource_id), engine.schema)
    request = request_dict(f, f.route.action, f.resource_id, context_json(f, None))
    result = cedarpy.is_authorized(request, FULL[name], entities, engine.schema)
    assert result.diagnostics.errors == []
    reasons = tuple(sorted(result.diagnostics.reasons))
    return result.allowed, reasons or (("default-deny",) if not result.allowed else ())


@pytest.mark.parametrize("name", sorted(ENGINES))
@settings(max_examples=150, deadline=None)
@given(f=requests())
def test_sliced_decision_equals_the_full_set(name: str, f: Facts) -> None:
    verdict, _ = ENGINES[name].decide(f)
    assert verdict.reason != "evaluation_error"
    assert (verdict.allowed, verdict.policy_ids) == reference(name, f)


@pytest.mark.parametrize("name", sorted(ENGINES))
@settings(max_examples=100, deadline=None)
@given(f=requests())
def test_masks_equal_per_field_decisions_over_the_full_set(name: str, f: Facts) -> None:
    engine = ENGINES[name]
    verdict, _ = engine.decide(f)
    if not verdict.allowed:
        return
    entities = cedarpy.Entities.from_json_str(
        engine.entities.field_entities_json(f, f.route.field_categories), engine.schema
    )
    context = context_json(f, None)
    expected = set()
    for category in f.route.field_categories:
        request = {
            "principal": request_dict(f, "read_field", "", context)["principal"],
            "action": {"type": "Action", "id": "read_field"},
            "resource": {"type": "DataCategory", "id": category},
            "context": context,
        }
        if not cedarpy.is_authorized(request, FULL[name], entities, engine.schema).allowed:
            expected.add(category)
    assert {m.category for m in verdict.masks} == expected


def test_slices_leave_out_policies_that_cannot_apply() -> None:
    agent = ENGINE.index.slice("read", "Contact", "User", ("Support.Agent",))
    ids = {p.id for p in agent.policies}
    assert "support-agent-reads" in ids and "tenant-isolation" in ids
    assert not ids & {
        "billing-admin-payments",
        "service-mail",
        "gmail-read-with-consent",
        "security-investigator-reads",
        "service-roles-automated-only",
        "invitations-respect-opt-outs",
    }
    assert not agent.reads_resource_id and not agent.uses_time
    gmail = ENGINE.index.slice("read", "GmailMessage", "User", ())
    assert gmail.reads_resource_id and gmail.uses_time


def test_generated_policies_stay_out_of_foreign_slices(tmp_path: Path) -> None:
    """300 extra role policies: a slice holds only those of the caller's roles (the benchmark's premise)."""
    target = tmp_path / "policies"
    import shutil

    shutil.copytree(Path(ENGINE.files.policies_dir), target)
    (target / "generated.cedar").write_text(generated_policies(300))
    register_generated_roles(target)
    engine = PolicyEngine.load(target, ENGINE.files.route_maps)
    small = ENGINE.index.slice("read", "Contact", "User", ("Support.Agent",))
    large = engine.index.slice("read", "Contact", "User", ("Support.Agent",))
    assert len(engine.policies.policies) == len(ENGINE.policies.policies) + 300
    assert [p.id for p in large.policies] == [p.id for p in small.policies]
    generated_role = engine.index.slice("read", "Contact", "User", ("Gen.Role0",))
    assert any(p.id.startswith("gen-") for p in generated_role.policies)
