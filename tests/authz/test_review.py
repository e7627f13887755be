"""The second look at the upstream's answer (``review.review``): record facts decided by real Cedar on
the base policies and the shared retention rule, then the masks; failing closed on what it cannot read.

Lists: each item is decided on its own facts and a refused item is withheld (null); the list itself
stays allowed. Only 2xx answers are checked for facts; others are passed on, still masked.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from gateway.authz.decide import make_decision
from gateway.authz.decision import Decision
from gateway.authz.engine import PolicyEngine
from gateway.authz.facts import Facts
from gateway.authz.review import ResponseReview, review
from tests.authz.support import NOW, A, facts, user

DAY = 86400
SUPPORT = "essential.service.operations.support"
MARKETING = "marketing.communications.email"
JSON_TYPE = "application/json"


def decide(engine: PolicyEngine, request: Facts) -> Decision:
    verdict, cached = engine.decide(request)
    return make_decision(engine, request, verdict, cached, None)


def days_ago(days: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(NOW - days * DAY, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def payment(days: float, **extra: Any) -> bytes:
    doc = {"id": "pay-a-001", "card_number": "4111111111111111", "expiry": "01/30", "amount": 12.5}
    doc.update({"created_at": days_ago(days)}, **extra)
    return json.dumps(doc).encode()


def contact(days: float, opted_out: bool, **extra: Any) -> dict[str, Any]:
    return {
        "id": "ct-a-005",
        "name": "Ann Example",
        "email": "optout@example.com" if opted_out else "ann@example.com",
        "phone": "+12065550105",
        "company": "Litware",
        "marketing_opt_out": opted_out,
        "created_at": days_ago(days),
        **extra,
    }


def agent_payment(engine: PolicyEngine, **changes: Any) -> Decision:
    decision = decide(engine, facts(engine, user("Support.Agent"), "payments.read", "pay-a-001", purpose=SUPPORT))
    assert decision.allowed and decision.reviews_record and decision.inspects_response
    return dataclasses.replace(decision, **changes) if changes else decision


def reviewed(decision: Decision, body: bytes, status: int = 200, content_type: str = JSON_TYPE) -> ResponseReview:
    return review(decision, status, content_type, body, NOW)


def test_a_record_past_its_retention_is_refused_with_the_policy_and_its_clause(engine: PolicyEngine) -> None:
    outcome = reviewed(agent_payment(engine), payment(2555))  # payments are kept 2555 days
    refusal = outcome.refusal
    assert refusal is not None and outcome.body == b""
    assert (refusal.allowed, refusal.status, refusal.reason) == (False, 403, "retention")
    assert refusal.policy_ids == ("retention-limit",)
    assert refusal.reasons[0]["policy"] == "retention-limit" and "retained" in refusal.reasons[0]["clause"]
    assert refusal.route_id == "payments.read" and refusal.resource_id == "pay-a-001" and not refusal.masks


def test_a_record_within_its_retention_is_passed_on_masked(engine: PolicyEngine) -> None:
    outcome = reviewed(agent_payment(engine), payment(2554))
    assert outcome.refusal is None and set(outcome.pointers) == {"/card_number", "/expiry"}
    document = json.loads(outcome.body)
    assert document["card_number"] == "************1111" and document["amount"] == 12.5
    assert outcome.withheld == () and outcome.policies == ()


def test_the_customers_shorter_retention_holds(engine: PolicyEngine) -> None:
    request = facts(engine, user("Support.Agent"), "payments.read", "pay-a-001", purpose=SUPPORT, retention=30)
    decision = decide(engine, request)
    assert reviewed(decision, payment(30)).refusal is not None
    assert reviewed(decision, payment(29)).refusal is None
    longer = decide(
        engine,
        dataclasses.replace(request, tenant_facts=dataclasses.replace(request.tenant_facts, retention_days=9000)),
    )
    assert reviewed(longer, payment(2555)).refusal is not None  # the manifests' 2555 days are shorter


def test_a_legal_obligation_reaches_a_record_past_retention(engine: PolicyEngine) -> None:
    request = facts(engine, user("Legal.Officer"), "payments.read", "pay-a-001", purpose="essential.legal_obligation")
    decision = decide(engine, request)
    # no policy that can decide this request reads the record: the answer is only masked
    assert decision.allowed and not decision.reviews_record and decision.inspects_response
    outcome = reviewed(decision, payment(5000))
    assert outcome.refusal is None and "/card_number" in outcome.pointers


def test_a_contact_who_opted_out_is_refused_to_marketing_only(engine: PolicyEngine) -> None:
    marketing = decide(engine, facts(engine, user("Marketing.Manager"), "contacts.read", "ct-a-005", purpose=MARKETING))
    support = decide(engine, facts(engine, user("Support.Agent"), "contacts.read", "ct-a-005", purpose=SUPPORT))
    opted_out = json.dumps(contact(100, True)).encode()
    refused = reviewed(marketing, opted_out).refusal
    assert refused is not None and (refused.status, refused.reason) == (403, "opted_out")
    assert refused.policy_ids == ("marketing-respects-contact-opt-out",)
    assert reviewed(marketing, json.dumps(contact(100, False)).encode()).refusal is None
    helped = reviewed(support, opted_out)
    assert helped.refusal is None and json.loads(helped.body)["email"] == "optout@example.com"


def test_a_list_withholds_the_refused_items_and_keeps_the_others(engine: PolicyEngine) -> None:
    decision = decide(engine, facts(engine, user("Marketing.Manager"), "contacts.list", purpose=MARKETING))
    assert decision.inspects_response
    items = [contact(10, False, id="ct-a-001"), contact(20, True), None, contact(4000, False, id="ct-a-009")]
    outcome = reviewed(decision, json.dumps({"tenant": A, "contacts": items}).encode())
    assert outcome.refusal is None
    document = json.loads(outcome.body)
    assert [c and c["id"] for c in document["contacts"]] == ["ct-a-001", None, None, None]
    assert outcome.withheld == ("/contacts/1", "/contacts/3")
    assert set(outcome.policies) == {"marketing-respects-contact-opt-out", "retention-limit"}
    assert outcome.pointers[:2] == ("/contacts/1", "/contacts/3")  # withheld first, then masked fields
    assert document["contacts"][0]["email"] == "ann@example.com"


def test_a_list_with_nothing_to_withhold_is_passed_on_as_it_came(engine: PolicyEngine) -> None:
    decision = decide(
        engine, facts(engine, user("Security.Investigator"), "calls.list", purpose="essential.service.security")
    )
    body = json.dumps({"calls": [{"id": "call-a-003", "from": "+1", "to": "+2", "created_at": days_ago(5)}]}).encode()
    outcome = reviewed(decision, body)
    assert outcome == ResponseReview(None, body)


@pytest.mark.parametrize(
    ("content_type", "body", "detail"),
    [
        (JSON_TYPE, b'{"created_at": "2026-01-0', "not valid JSON"),
        (JSON_TYPE, b"\xff\xfe", "not valid JSON"),
        ("text/plain", b"created_at: 2026-01-01", "not JSON"),
        (JSON_TYPE, b'{"id": "pay-a-001"}', "no /created_at"),
        (JSON_TYPE, b'{"created_at": null}', "no /created_at"),
        (JSON_TYPE, b'{"created_at": "2026-01-01T10:00:00"}', "offset"),
        (JSON_TYPE, b'{"created_at": true}', "not a boolean"),
        (JSON_TYPE, b'{"created_at": 1e400}', "out of range"),
        (JSON_TYPE, b"[]", "no /created_at"),
        (JSON_TYPE, b" ", "not valid JSON"),
    ],
)
def test_an_answer_whose_facts_cannot_be_read_is_refused_502(
    engine: PolicyEngine, content_type: str, body: bytes, detail: str
) -> None:
    refusal = reviewed(agent_payment(engine), body, content_type=content_type).refusal
    assert refusal is not None and (refusal.status, refusal.reason) == (502, "unreadable_response")
    assert refusal.policy_ids == ("fail-closed",) and detail in refusal.detail


def test_a_list_without_its_array_or_with_an_unreadable_item_is_refused(engine: PolicyEngine) -> None:
    decision = decide(engine, facts(engine, user("Marketing.Manager"), "contacts.list", purpose=MARKETING))
    for doc in (
        {"contacts": {"a": 1}},
        {"items": []},
        {"contacts": [{"created_at": days_ago(1), "marketing_opt_out": "no"}]},
    ):
        refusal = reviewed(decision, json.dumps(doc).encode()).refusal
        assert refusal is not None and refusal.status == 502, doc


def test_only_2xx_answers_are_checked_and_others_are_still_masked(engine: PolicyEngine) -> None:
    decision = agent_payment(engine)
    problem = b'{"type":"about:blank","title":"Not Found","status":404,"detail":"payment not found"}'
    assert reviewed(decision, problem, status=404, content_type="application/problem+json") == ResponseReview(
        None, problem
    )
    # a 404 that carries a card number is masked all the same, never checked for facts
    odd = reviewed(decision, b'{"card_number": "4111111111111111"}', status=404)
    assert odd.refusal is None and json.loads(odd.body)["card_number"] == "************1111"
    assert reviewed(decision, b"", status=204) == ResponseReview(None, b"")  # an empty body gives nothing away
    assert reviewed(decision, b"") == ResponseReview(None, b"")
    unmaskable = reviewed(decision, b"<html>oops</html>", status=500, content_type="text/html").refusal
    assert unmaskable is not None and unmaskable.reason == "unreadable_response"


def test_decisions_that_inspect_nothing_are_left_alone(engine: PolicyEngine) -> None:
    denied = decide(
        engine, facts(engine, user("Support.Agent"), "payments.read", "pay-a-001", purpose="marketing.advertising")
    )
    assert not denied.allowed and not denied.inspects_response
    assert reviewed(denied, b"anything") == ResponseReview(None, b"anything")
    legal = "essential.legal_obligation"
    unmasked = decide(engine, facts(engine, user("Legal.Officer"), "surveys.results", "sv-a-001", purpose=legal))
    assert unmasked.allowed and not unmasked.inspects_response
    # a call read for the law is not masked nor checked for facts, but its answer names the caller
    subjects = decide(
        engine, facts(engine, user("Legal.Officer"), "calls.read", "call-a-001", purpose="essential.legal_obligation")
    )
    assert subjects.allowed and subjects.reads_subjects and subjects.inspects_response
    assert not subjects.masks and not subjects.reviews_record


def test_the_second_decision_is_cached_by_age_in_days(engine: PolicyEngine) -> None:
    decision = decide(engine, facts(engine, user("Analyst"), "analytics.events", purpose="analytics.reporting"))
    events = [{"id": f"e{i}", "timestamp": days_ago(3 + (i % 3) + (i % 7) / 100)} for i in range(40)]
    body = json.dumps({"events": events}).encode()
    engine.decisions.clear()
    misses = engine.decisions.misses
    first = reviewed(decision, body)
    assert first.refusal is None and first.withheld == ()
    assert engine.decisions.misses - misses == 3  # three distinct ages in days: three Cedar calls
    hits = engine.decisions.hits
    assert reviewed(decision, body) == first
    assert engine.decisions.hits - hits == 3 and engine.decisions.misses - misses == 3


def test_the_number_of_distinct_records_in_one_answer_is_bounded(engine: PolicyEngine) -> None:
    decision = decide(engine, facts(engine, user("Analyst"), "analytics.events", purpose="analytics.reporting"))
    body = json.dumps({"events": [{"timestamp": days_ago(d)} for d in (1, 2, 3)]}).encode()
    assert review(decision, 200, JSON_TYPE, body, NOW, max_records=3).refusal is None
    refusal = review(decision, 200, JSON_TYPE, body, NOW, max_records=2).refusal
    assert refusal is not None and refusal.status == 502 and "more than 2" in refusal.detail
