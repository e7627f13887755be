"""``RecordPreparer``: what the audit writer adds to a record (replay inputs, data subjects), memoised
per cached decision and review content, is always what preparing it afresh gives."""

from __future__ import annotations

import json
import time
from typing import Any

from gateway.audit.pseudonyms import pseudonymiser
from gateway.audit.record import DecisionRecord
from gateway.authz.decide import make_decision
from gateway.authz.decision import Decision
from gateway.authz.engine import PolicyEngine
from gateway.authz.prepare import RecordPreparer
from gateway.authz.review import ResponseReview, review
from gateway.demo.fixtures import load_fixtures
from tests.authz.support import ROUTE_MAPS, SHIPPED_POLICIES, A, facts, user

KEY = b"test pseudonym key of 32 bytes.."
CONTACT = "ct-a-005"


def contact_decision() -> Decision:
    engine = PolicyEngine.load(SHIPPED_POLICIES, ROUTE_MAPS)
    purpose = "essential.service.operations.support"
    request = facts(engine, user("Support.Agent"), "contacts.read", CONTACT, purpose=purpose)
    return make_decision(engine, request, *engine.decide(request), None, (f"contact:{CONTACT}",))


def answer(**changes: Any) -> bytes:
    (contact,) = [c for c in load_fixtures()[A].contacts if c["id"] == CONTACT]
    return json.dumps({**contact, **changes}).encode()


def prepared(preparer: RecordPreparer, decision: Decision, outcome: ResponseReview | None) -> DecisionRecord:
    record = DecisionRecord(decision_id="d", time=1.0, method="GET", path="/")
    record.replay = (decision, outcome)
    preparer(record)
    return record


def fields(record: DecisionRecord) -> tuple[object, ...]:
    return record.inputs, record.subjects, dict(record.extra), record.shadow_decision


def test_memoised_preparation_equals_a_fresh_one_for_every_review() -> None:
    decision = contact_decision()
    now = time.time()
    answers = [
        answer(),
        answer(email="someone.else@example.com"),  # other subjects
        answer(created_at="2001-01-01T00:00:00Z"),  # other record facts (its age): refused by retention
        answer(),  # the first again: from the memo
    ]
    memoised = RecordPreparer(pseudonymiser(KEY))
    seen = []
    for body in answers:
        outcome = review(decision, 200, "application/json", body, now)
        fresh = prepared(RecordPreparer(pseudonymiser(KEY)), decision, outcome)
        again = prepared(memoised, decision, outcome)
        assert fields(again) == fields(fresh)
        seen.append(fields(again))
    assert seen[0] == seen[3]
    assert seen[0][1] != seen[1][1]  # the subjects follow the answer, not the memo
    assert seen[0][0] != seen[2][0]  # and so do the inputs


def test_a_decision_without_a_review_is_prepared_once_per_decision_object() -> None:
    decision = contact_decision()
    preparer = RecordPreparer(pseudonymiser(KEY))
    first, second = prepared(preparer, decision, None), prepared(preparer, decision, None)
    assert fields(first) == fields(second) and first.inputs
    other = contact_decision()  # an equal decision, another object: prepared on its own, the same
    assert fields(prepared(preparer, other, None)) == fields(first)
