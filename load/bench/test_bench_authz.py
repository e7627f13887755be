"""Cost of one authorization decision: a decision-cache hit, a miss, and a cold miss, with the shipped
policies and with 300 generated policies added.

- ``hit``: the decision cache answers (the common case: the same caller, route, purpose and facts;
  record ids are not part of the key when no policy reads them).
- ``miss``: the decision cache misses; the parsed entity handle and the per-category masking decisions
  are warm (as for a known caller whose context changed). This is one Cedar evaluation on the slice.
- ``cold``: every cache is empty: the request's entities are serialised and parsed by Cedar, then
  evaluated, then the masking categories are decided (one batched call).
- ``unsliced``: Cedar over the whole policy set with a warm entity handle, for comparison: what
  slicing saves.
- ``authorize_hit``: ``Authorizer.authorize`` end to end (route, input checks, resolver cache, decision
  cache), without an event-loop round trip (with facts cached it never suspends).
- ``review_hit`` / ``review_miss``: ``review.review`` of the payment's JSON answer once the upstream
  answered: parse, read the record's facts (its age), the second decision (from the cache, or one Cedar
  evaluation with the entity handle warm), mask the card number, serialise.

"shipped" is the policies directory as shipped (base policies and the policy packs). The request is a
support agent reading a payment (the card number is masked). The 300 generated
policies use the real roles, actions and record types (every tenth one without a principal scope).

    .venv/bin/pytest load/bench/test_bench_authz.py --benchmark-enable -p no:cacheprovider
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any

import cedarpy
import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # tests.* is not on the path when pytest runs from load/
    sys.path.insert(0, str(ROOT))

from gateway.authz.authorizer import Authorizer  # noqa: E402
from gateway.authz.decide import make_decision  # noqa: E402
from gateway.authz.decision import Decision  # noqa: E402
from gateway.authz.engine import PolicyEngine  # noqa: E402
from gateway.authz.entities import context_json, request_dict  # noqa: E402
from gateway.authz.facts import Facts  # noqa: E402
from gateway.authz.policyset import build_policy_set  # noqa: E402
from gateway.authz.review import review  # noqa: E402
from gateway.authz.settings import AuthzSettings  # noqa: E402
from gateway.demo.fixtures import load_fixtures  # noqa: E402
from gateway.demo.upstream import create_upstream_app  # noqa: E402
from tests.authz.support import ROUTE_MAPS, SHIPPED_POLICIES, A, facts, generated_policies, user  # noqa: E402
from tests.support.servers import serve  # noqa: E402

REAL_ROLES = (
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
)
PURPOSE = "essential.service.operations.support"


@pytest.fixture(scope="module", params=["shipped", "300"])
def policies_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    if request.param == "shipped":
        return SHIPPED_POLICIES
    target = tmp_path_factory.mktemp("policies") / "policies"
    shutil.copytree(SHIPPED_POLICIES, target)
    (target / "generated.cedar").write_text(generated_policies(300, REAL_ROLES))
    return target


@pytest.fixture(scope="module")
def engine(policies_dir: Path) -> PolicyEngine:
    return PolicyEngine.load(policies_dir, ROUTE_MAPS)


def payment_read(engine: PolicyEngine) -> Facts:
    return facts(engine, user("Support.Agent"), "payments.read", "pay-a-005", purpose=PURPOSE)


def test_decide_hit(benchmark: Any, engine: PolicyEngine) -> None:
    request = payment_read(engine)
    engine.decide(request)
    verdict, cached = benchmark(engine.decide, request)
    assert cached and verdict.allowed


def test_decide_miss(benchmark: Any, engine: PolicyEngine) -> None:
    request = payment_read(engine)
    engine.decide(request)
    decisions = engine.decisions

    def miss() -> tuple[Any, bool]:
        decisions.clear()
        return engine.decide(request)

    verdict, cached = benchmark(miss)
    assert not cached and verdict.allowed and verdict.masks


def test_decide_cold(benchmark: Any, engine: PolicyEngine) -> None:
    request = payment_read(engine)

    def cold() -> tuple[Any, bool]:
        for cache in (engine.decisions, engine.entity_handles, engine.field_decisions, engine.route_masks):
            cache.clear()
        return engine.decide(request)

    verdict, cached = benchmark(cold)
    assert not cached and verdict.allowed and verdict.masks


def test_unsliced_full_set(benchmark: Any, engine: PolicyEngine) -> None:
    request = payment_read(engine)
    full = build_policy_set(engine.policies.policies)
    entities = cedarpy.Entities.from_json_str(engine.entities.entities_json(request, ""), engine.schema)
    cedar_request = request_dict(request, "read", "", context_json(request, None))
    result = benchmark(cedarpy.is_authorized, cedar_request, full, entities)
    assert result.diagnostics.errors == []


def payment_answer() -> bytes:
    """The reference services' answer for pay-a-005 (within retention), as they serialise it."""
    (payment,) = [p for p in load_fixtures()[A].payments if p["id"] == "pay-a-005"]
    return json.dumps(payment, separators=(",", ":")).encode()


def test_review_hit(benchmark: Any, engine: PolicyEngine) -> None:
    request = payment_read(engine)
    decision = make_decision(engine, request, *engine.decide(request), None)
    body, now = payment_answer(), time.time()
    assert decision.reviews_record
    outcome = benchmark(review, decision, 200, "application/json", body, now)
    assert outcome.refusal is None and "/card_number" in outcome.pointers


def test_review_miss(benchmark: Any, engine: PolicyEngine) -> None:
    request = payment_read(engine)
    decision = make_decision(engine, request, *engine.decide(request), None)
    body, now = payment_answer(), time.time()
    decisions = engine.decisions

    def miss() -> Any:
        decisions.clear()
        return review(decision, 200, "application/json", body, now)

    outcome = benchmark(miss)
    assert outcome.refusal is None and "/card_number" in outcome.pointers


def test_prepare_record(benchmark: Any, engine: PolicyEngine) -> None:
    """The audit writer's per-record extras (``RecordPreparer``): the replay inputs, the data subjects
    (a contact id and its e-mail address as a keyed pseudonym), in the writer thread, for a reviewed and
    masked payment read; then the record's row and terms, as the writer builds them."""
    from gateway.audit.pseudonyms import pseudonymiser
    from gateway.audit.record import DecisionRecord
    from gateway.audit.schema import record_row, record_terms
    from gateway.authz.prepare import RecordPreparer

    request = payment_read(engine)
    decision = make_decision(engine, request, *engine.decide(request), None, ("contact:ct-a-005",))
    outcome = review(decision, 200, "application/json", payment_answer(), time.time())
    prepare = RecordPreparer(pseudonymiser(b"benchmark pseudonym key, 32 byte"))

    def written() -> DecisionRecord:
        record = DecisionRecord(decision_id="01a2", time=1.0, method="GET", path="/")
        record.replay = (decision, outcome)
        prepare(record)
        record_row(record)
        record_terms(record)
        return record

    record = benchmark(written)
    assert record.inputs and record.subjects


def complete(coroutine: Coroutine[Any, Any, Decision]) -> Decision:
    """Run a coroutine that must not suspend (facts cached): no event-loop overhead in the figure."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    coroutine.close()
    raise AssertionError("authorize suspended: the resolver cache was cold")


@pytest.fixture(scope="module")
def upstream_url() -> Iterator[str]:
    with serve(create_upstream_app()) as server:
        yield server.url


async def test_authorize_hit(benchmark: Any, upstream_url: str, policies_dir: Path) -> None:
    authz = Authorizer.load(AuthzSettings(policies_dir, ROUTE_MAPS, upstream_url, watch=False))
    await authz.start()
    try:
        principal = user("Support.Agent")
        match = authz.match("GET", f"/tenants/{A}/payments/pay-a-005")
        assert match is not None

        def call() -> Any:
            return authz.authorize(
                principal,
                match,
                purpose=PURPOSE,
                recipient=None,
                consent_ref=None,
                body=None,
                now=time.time(),
            )

        first = await call()  # fills the resolver and decision caches, and the decision memo
        decision = benchmark(lambda: complete(call()))
        assert decision.allowed and decision is first  # a repeat within the memo's second
    finally:
        await authz.close()


async def test_authorize_memo_miss(benchmark: Any, upstream_url: str, policies_dir: Path) -> None:
    """A request shape seen before but not in the memo: input checks, facts from the resolver cache,
    the engine's decision cache, the decision built."""
    authz = Authorizer.load(AuthzSettings(policies_dir, ROUTE_MAPS, upstream_url, watch=False))
    await authz.start()
    try:
        principal = user("Support.Agent")
        match = authz.match("GET", f"/tenants/{A}/payments/pay-a-005")
        assert match is not None
        memo = authz.engine.decision_memo

        def call() -> Any:
            memo.clear()
            return authz.authorize(
                principal, match, purpose=PURPOSE, recipient=None, consent_ref=None, body=None, now=time.time()
            )

        await call()
        decision = benchmark(lambda: complete(call()))
        assert decision.allowed and decision.cached
    finally:
        await authz.close()


def test_match_remembered(benchmark: Any, policies_dir: Path) -> None:
    authz = Authorizer.load(AuthzSettings(policies_dir, ROUTE_MAPS, "http://127.0.0.1:9", watch=False))
    path = f"/tenants/{A}/payments/pay-a-005"
    first = authz.match("GET", path, path.encode())
    assert benchmark(authz.match, "GET", path, path.encode()) is first


def test_match_normalised(benchmark: Any, policies_dir: Path) -> None:
    """A path not seen before: normalised, checked against the decoded path, matched segment by segment."""
    authz = Authorizer.load(AuthzSettings(policies_dir, ROUTE_MAPS, "http://127.0.0.1:9", watch=False))
    path = f"/tenants/{A}/payments/pay-a-005"
    matches = authz.engine.route_matches

    def call() -> Any:
        matches.clear()
        return authz.match("GET", path, path.encode())

    match = benchmark(call)
    assert match is not None and match.resource_id == "pay-a-005"
