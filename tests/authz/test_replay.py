"""Replay: what a record keeps of a decision is enough to decide it again.

The property the whole of ``gateway policy replay`` rests on: replaying a recorded decision under the
policy set that made it changes nothing, for every kind of recorded traffic (each policy case of the
shipped packs, and generated requests with and without record facts), through the record's JSON
with pseudonymised body fields.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.audit.pseudonyms import pseudonymiser
from gateway.authz.cases import evaluate_case_review
from gateway.authz.decide import make_decision
from gateway.authz.engine import PolicyEngine
from gateway.authz.policytest import discover, load_fixtures, load_suite
from gateway.authz.replay import Outcome, capture, compare, decode, encode, replay
from gateway.authz.review import review
from tests.authz.support import NOW, ROUTE_MAPS, SHIPPED_POLICIES, A, B, app, facts, user

ENGINE = PolicyEngine.load(SHIPPED_POLICIES, ROUTE_MAPS)
PSEUDONYM = pseudonymiser(b"test key, 32 bytes of it........")


def shipped_cases() -> list[object]:
    fixture_files, suites = discover(SHIPPED_POLICIES)
    fixtures = load_fixtures(fixture_files)
    out: list[object] = []
    for path in suites:
        out.extend(load_suite(path, ENGINE, fixtures))
    return out


CASES = shipped_cases()


def test_every_shipped_case_replays_to_what_it_decided() -> None:
    replayed = 0
    for suite_case in CASES:
        case = suite_case.case  # type: ignore[attr-defined]
        decision, reviewed = evaluate_case_review(ENGINE, case)
        item = capture(decision, reviewed)
        if item is None:  # not decided by the policies (bad input, unmapped, fail closed): not replayable
            assert decision.basis is None or "fail-closed" in decision.policy_ids
            continue
        if ENGINE.routes.by_id.get(item.facts.route.id) != item.facts.route:
            continue  # a case in the direct Cedar form: its resource is no route of the maps
        text = encode(item, PSEUDONYM)
        assert "optout@example.com" not in text and "@example.com" not in text  # addresses pseudonymised
        again = replay(ENGINE, decode(text))
        # a case without its record shows the decision made before the record is read
        assert not again.partial or case.record is None, case.name
        assert again.outcome == item.outcome, case.name
        replayed += 1
    assert replayed > 150


@st.composite
def traffic(draw: st.DrawFn) -> tuple[object, bytes | None]:
    """A request of the reference services with the answer the upstream gave (None: not read)."""
    kind = draw(st.sampled_from(["user", "app"]))
    roles = tuple(draw(st.lists(st.sampled_from(sorted(ENGINE.roles.employee | ENGINE.roles.service)),
                                max_size=2, unique=True)))  # fmt: skip
    principal = user(*roles) if kind == "user" else app(*roles)
    route = draw(st.sampled_from([r.id for r in ENGINE.routes.routes]))
    purposes = sorted(ENGINE.taxonomy.purposes.parents)
    f = facts(
        ENGINE, principal, route, draw(st.sampled_from(["", "ct-a-001", "pay-a-001", "m1"])),
        tenant=draw(st.sampled_from([A, B])), owner=draw(st.sampled_from([None, principal.id, "someone"])),
        purpose=draw(st.sampled_from(purposes)),
        recipient=draw(st.sampled_from([None, "salesforce", "pardot"])),
        body=draw(st.sampled_from([(), (("email", "optout@example.com"),), (("email", "new@example.com"),)])),
        optouts=draw(st.sampled_from([None, frozenset({"optout@example.com"})])),
        retention=draw(st.sampled_from([None, 30, 3650])),
    )  # fmt: skip
    answer = None
    rules = f.route.response_facts
    if rules:
        def item() -> dict[str, object]:
            out: dict[str, object] = {}
            for rule in rules:
                name = rule.pointer.tokens[-1]
                if rule.kind == "age":
                    out[name] = NOW - draw(st.sampled_from([3600, 200 * 86400, 400 * 86400, 4000 * 86400]))
                elif rule.kind == "bool":
                    out[name] = draw(st.booleans())
                else:
                    out[name] = draw(st.sampled_from([A, B]))
            return out

        if f.route.facts_items is None:
            answer = json.dumps(item()).encode()
        else:
            prefix = f.route.facts_items.tokens
            rows = [item() for _ in range(draw(st.integers(0, 4)))]
            doc: object = rows
            for token in reversed(prefix):
                doc = {token: doc}
            answer = json.dumps(doc).encode()
    return f, answer


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(request=traffic())
def test_replaying_under_the_enforced_set_changes_nothing(request: tuple[object, bytes | None]) -> None:
    f, answer = request
    verdict, cached = ENGINE.decide(f)  # type: ignore[arg-type]
    decision = make_decision(ENGINE, f, verdict, cached, None)  # type: ignore[arg-type]
    outcome = None
    if decision.inspects_response and answer is not None and f.route.facts_from is None:  # type: ignore[attr-defined]
        outcome = review(decision, 200, "application/json", answer, NOW)
    item = capture(decision, outcome)
    assert item is not None
    recorded = decode(encode(item, PSEUDONYM))
    again = replay(ENGINE, recorded)
    assert again.outcome == item.outcome
    assert compare(item.outcome, again.outcome) is None


def test_compare_names_the_kind_of_change() -> None:
    allow = Outcome(True, ("p",), ("/a",))
    assert compare(allow, Outcome(False, ("f",), ())).kind == "allow->deny"  # type: ignore[union-attr]
    assert compare(Outcome(False, ("f",), ()), allow).kind == "deny->allow"  # type: ignore[union-attr]
    change = compare(allow, Outcome(True, ("p",), ("/a", "/b")))
    assert change is not None and change.kind == "masks" and change.masks_disappearing == ("/b",)
    withheld = compare(Outcome(True, ("p",), (), (False, False)), Outcome(True, ("p", "f"), (), (False, True)))
    assert withheld is not None and withheld.masks_disappearing == ("record 1",)
    assert compare(allow, Outcome(True, ("q",), ("/a",))) is None  # another permit: same outcome
    assert compare(Outcome(False, ("f",), ()), Outcome(False, ("g",), ())) is None


def test_a_candidate_that_forbids_more_is_seen(tmp_path: Path) -> None:
    import shutil

    target = tmp_path / "policies"
    shutil.copytree(SHIPPED_POLICIES, target)
    (target / "extra.cedar").write_text(
        '@id("no-support-on-payments")\n@source("test")\n@clause("no payments for support")\n'
        'forbid (principal, action, resource is Payment) when { context.purpose in '
        'Purpose::"essential.service.operations.support" };\n'
    )
    candidate = PolicyEngine.load(target, ROUTE_MAPS)
    f = facts(ENGINE, user("Support.Agent"), "payments.read", "pay-a-001",
              purpose="essential.service.operations.support")  # fmt: skip
    verdict, cached = ENGINE.decide(f)
    item = capture(make_decision(ENGINE, f, verdict, cached, None))
    assert item is not None and item.outcome.allowed
    new = replay(candidate, decode(encode(item, PSEUDONYM))).outcome
    change = compare(item.outcome, new)
    assert change is not None and change.kind == "allow->deny" and new.policies == ("no-support-on-payments",)


@pytest.mark.parametrize("value", ["optout@example.com", "a@b.example"])
def test_pseudonyms_are_keyed_and_stable(value: str) -> None:
    other = pseudonymiser(b"another key")
    assert PSEUDONYM(value) == PSEUDONYM(value) != other(value)
    assert value not in PSEUDONYM(value)
