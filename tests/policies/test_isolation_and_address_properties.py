"""Rules of issue 19 that must hold for all inputs, checked over the shipped packs:

- no list answer ever passes on a row of another tenant than the caller's, whatever rows the
  upstream mixes in, whatever role and purpose asked;
- no invitation goes to an address that canonicalises to one on the opt-out list, however it is
  spelled; an address that is no mailbox address is a 400, never compared.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.adapters.routemap import RouteTable
from gateway.authz.decide import InvalidInput, lift_body, make_decision
from gateway.authz.emails import canonical_email
from gateway.authz.engine import PolicyEngine
from gateway.authz.review import review
from tests.authz.support import NOW, ROUTE_MAPS, SHIPPED_POLICIES, A, B, facts, user

ENGINE = PolicyEngine.load(SHIPPED_POLICIES, ROUTE_MAPS)
OPTED_OUT = "optout@example.com"

#: The people who may list the tenants, with the purpose they may do it for.
LISTERS = [
    (("Engineering.Operator",), "essential.service.operations"),
    (("Engineering.Operator",), "essential.service.operations.improve"),
    (("Security.Investigator",), "essential.service.security"),
    (("Legal.Officer",), "essential.legal_obligation"),
    (("Legal.Officer", "Security.Investigator"), "essential.legal_obligation"),
]


def tenant_ids() -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from([A, B, A.upper(), B.upper()]), st.uuids().map(str))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    caller=st.sampled_from([A, B]),
    lister=st.sampled_from(LISTERS),
    rows=st.lists(tenant_ids(), min_size=0, max_size=12),
)
def test_the_tenant_list_never_passes_on_another_tenants_row(
    caller: str, lister: tuple[tuple[str, ...], str], rows: list[str]
) -> None:
    roles, purpose = lister
    f = facts(ENGINE, user(*roles, tenant=caller), "tenants.list", purpose=purpose)
    verdict, cached = ENGINE.decide(f)
    assert verdict.allowed, verdict
    decision = make_decision(ENGINE, f, verdict, cached, None)
    assert decision.reviews_record  # the answer is always checked before it is passed on
    answer = {"tenants": [{"id": tid, "name": f"tenant {i}", "retention_days": {}} for i, tid in enumerate(rows)]}
    outcome = review(decision, 200, "application/json", json.dumps(answer).encode(), NOW)
    assert outcome.refusal is None
    given_rows = [item for item in json.loads(outcome.body)["tenants"] if item is not None]
    assert all(item["id"].lower() == caller for item in given_rows)
    assert len(given_rows) == sum(tid.lower() == caller for tid in rows)
    assert set(outcome.withheld) == {f"/tenants/{i}" for i, tid in enumerate(rows) if tid.lower() != caller}


@pytest.mark.parametrize("route_map", ROUTE_MAPS, ids=lambda p: Path(p).name)
def test_every_list_route_is_bound_to_one_tenant(route_map: Path) -> None:
    """A list route's answer belongs to the path's tenant, to one mailbox of the caller's tenant, or
    names each row's tenant so that the others' rows are withheld: never a free mix."""
    for route in RouteTable.load([route_map]).routes:
        if route.action != "list":
            continue
        bound = route.tenant_param is not None or route.owner_param is not None
        names_tenant = any(rule.kind == "tenant" for rule in route.response_facts)
        assert bound or names_tenant, f"{route.id}: a list of the caller's tenant that does not name each row's tenant"


# --- addresses -------------------------------------------------------------------------------------


def spellings_of_the_opted_out_address() -> st.SearchStrategy[str]:
    """``optout@example.com`` written otherwise: letter case anywhere, needless quotes, white space
    around, the domain's labels in any case."""

    def recase(draw: st.DrawFn, text: str) -> str:
        flips = draw(st.lists(st.booleans(), min_size=len(text), max_size=len(text)))
        return "".join(c.upper() if flip else c for c, flip in zip(text, flips, strict=True))

    @st.composite
    def spelled(draw: st.DrawFn) -> str:
        local = recase(draw, "optout")
        if draw(st.booleans()):
            local = f'"{local}"'
        domain = recase(draw, "example.com")
        pad = draw(st.sampled_from(["", " ", "\t", "  "]))
        return f"{pad}{local}@{domain}{draw(st.sampled_from(['', ' ']))}"

    return spelled()


INVITE = ENGINE.routes.by_id["surveys.invite"]
OPTOUTS = frozenset({canonical_email(OPTED_OUT)})


def invite(address: str) -> tuple[str, bool | None]:
    """('400', None) when the body is refused as malformed, else ('decided', allowed)."""
    try:
        body = lift_body(INVITE.lift, json.dumps({"email": address}).encode())
    except InvalidInput:
        return "400", None
    f = facts(ENGINE, user("Marketing.Manager"), "surveys.invite", "sv-a-001", purpose="marketing.communications.email",
              body=body, optouts=OPTOUTS)
    verdict, _ = ENGINE.decide(f)
    return "decided", verdict.allowed


@settings(max_examples=300, deadline=None)
@given(address=spellings_of_the_opted_out_address())
def test_no_spelling_of_an_opted_out_address_is_invited(address: str) -> None:
    outcome, allowed = invite(address)
    assert outcome == "400" or allowed is False, address


@settings(max_examples=300, deadline=None)
@given(address=st.emails())
def test_an_address_is_invited_exactly_when_its_canonical_form_is_not_opted_out(address: str) -> None:
    outcome, allowed = invite(address)
    try:
        canonical = canonical_email(address)
    except ValueError:
        assert outcome == "400", address  # what email-validator refuses is never compared
        return
    assert outcome == "decided"
    assert allowed is (canonical not in OPTOUTS), address


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=80))
def test_anything_else_is_refused_or_decided_never_an_error(text: str) -> None:
    outcome, allowed = invite(text)
    if outcome == "decided":
        assert canonical_email(text) != OPTED_OUT or allowed is False
