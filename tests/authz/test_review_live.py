"""Record facts end to end: ``Authorizer`` with the shipped policies over the real reference services on
loopback, as the request path uses it: authorize, forward (here: a plain GET of the services), then
``review_response`` on the buffered answer when the decision says ``inspects_response``.

The fixtures' old records (gateway/demo/fixtures.py) are refused or withheld; their recent ones are
passed on. Requests are decided a month after the fixtures' epoch, so no answer depends on the date
the tests run.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import aiohttp
import pytest

from gateway.authz.authorizer import Authorizer
from gateway.authz.decision import Decision
from gateway.authz.review import ResponseReview
from gateway.authz.settings import AuthzSettings
from gateway.demo.fixtures import FIXTURE_EPOCH, MID_EVENT_COUNT, OLD_EVENT_AGES
from gateway.demo.upstream import create_upstream_app
from gateway.identity.principal import Principal
from tests.authz.support import ROUTE_MAPS, SHIPPED_POLICIES, A, app, user
from tests.support.servers import ThreadedServer, serve

NOW = FIXTURE_EPOCH.timestamp() + 30 * 86400
SUPPORT = "essential.service.operations.support"
MARKETING = "marketing.communications.email"


@pytest.fixture(scope="module")
def upstream() -> Iterator[ThreadedServer]:
    with serve(create_upstream_app()) as server:
        yield server


@pytest.fixture
async def authz(upstream: ThreadedServer) -> AsyncIterator[Authorizer]:
    settings = AuthzSettings(SHIPPED_POLICIES, ROUTE_MAPS, upstream.url, watch=False, validate_requests=True)
    authorizer = Authorizer.load(settings)
    await authorizer.start()
    try:
        yield authorizer
    finally:
        await authorizer.close()


@dataclass
class Exchange:
    decision: Decision  # the decision before forwarding
    review: ResponseReview | None  # None: not forwarded, or the answer needed no inspection
    status: int  # what the caller gets: the refusal's status or the upstream's
    body: bytes

    @property
    def refusal(self) -> Decision | None:
        if not self.decision.allowed:
            return self.decision
        return self.review.refusal if self.review is not None else None

    def json(self) -> dict[str, object]:
        document = json.loads(self.body)
        assert isinstance(document, dict)
        return document


async def through(
    authz: Authorizer,
    upstream: ThreadedServer,
    principal: Principal,
    method: str,
    path: str,
    purpose: str,
    recipient: str | None = None,
) -> Exchange:
    match = authz.match(method, path)
    assert match is not None, path
    decision = await authz.authorize(
        principal, match, purpose=purpose, recipient=recipient, consent_ref=None, body=None, now=NOW
    )
    if not decision.allowed:
        return Exchange(decision, None, decision.status, b"")
    headers = {"X-Gateway-Tenant": principal.tenant, "X-Gateway-Principal": principal.id}
    if recipient:
        headers["X-Recipient"] = recipient
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, upstream.url + path, headers=headers) as response,
    ):
        body = await response.read()
        if not decision.inspects_response:
            return Exchange(decision, None, response.status, body)
        review = authz.review_response(decision, response.status, response.headers.get("Content-Type", ""), body, NOW)
    if review.refusal is not None:
        return Exchange(decision, review, review.refusal.status, b"")
    return Exchange(decision, review, response.status, review.body)


@pytest.mark.parametrize(
    ("payment", "policies"),
    [
        ("pay-a-001", {"retention-limit", "aircall-billing-retention"}),  # 2016
        ("pay-a-003", {"retention-limit", "aircall-billing-retention"}),  # 2019
        ("pay-a-004", {"aircall-billing-retention"}),  # 2021: within the customer's 7 years, past Aircall's 5
    ],
)
async def test_payments_past_retention_are_refused_after_the_answer(
    authz: Authorizer, upstream: ThreadedServer, payment: str, policies: set[str]
) -> None:
    done = await through(authz, upstream, user("Billing.Admin"), "GET", f"/tenants/{A}/payments/{payment}",
                         "essential.service.payment_processing")  # fmt: skip
    assert done.decision.allowed and done.decision.inspects_response  # allowed before forwarding
    refusal = done.refusal
    assert refusal is not None and (done.status, refusal.reason) == (403, "retention") and done.body == b""
    assert set(refusal.policy_ids) == policies and {r["policy"] for r in refusal.reasons} == policies
    assert all(r["source"] and r["clause"] for r in refusal.reasons)


async def test_a_recent_payment_is_passed_on_masked(authz: Authorizer, upstream: ThreadedServer) -> None:
    done = await through(authz, upstream, user("Support.Agent"), "GET", f"/tenants/{A}/payments/pay-a-005", SUPPORT)
    assert done.refusal is None and done.status == 200 and done.review is not None
    assert done.json()["id"] == "pay-a-005" and str(done.json()["card_number"]).startswith("************")
    assert set(done.review.pointers) == {"/card_number", "/expiry"}
    service = await through(authz, upstream, app("Service.Payments"), "GET", f"/tenants/{A}/payments/pay-a-005",
                            "essential.service.payment_processing")  # fmt: skip
    assert service.review is not None and service.review.pointers == () and service.refusal is None


async def test_calls_recordings_and_transcripts(authz: Authorizer, upstream: ThreadedServer) -> None:
    agent = user("Support.Agent")
    old_call = await through(authz, upstream, agent, "GET", f"/tenants/{A}/calls/call-a-001", SUPPORT)
    assert old_call.refusal is not None and old_call.refusal.policy_ids == ("retention-limit",)
    call = await through(authz, upstream, agent, "GET", f"/tenants/{A}/calls/call-a-002", SUPPORT)
    assert call.refusal is None and call.json()["id"] == "call-a-002"
    fetches = authz.resolvers.fetches
    for what in ("recording", "transcript"):
        # the call's metadata is read before forwarding: refused without reaching the recording
        done = await through(authz, upstream, agent, "GET", f"/tenants/{A}/calls/call-a-002/{what}", SUPPORT)
        assert not done.decision.allowed and (done.decision.status, done.decision.reason) == (403, "retention")
        assert done.decision.policy_ids == ("retention-limit",)
    assert authz.resolvers.fetches == fetches + 1  # both read the call's facts from one cached fetch
    heard = await through(authz, upstream, agent, "GET", f"/tenants/{A}/calls/call-a-003/recording", SUPPORT)
    assert heard.decision.allowed and not heard.decision.inspects_response  # audio streams untouched
    assert heard.status == 200 and heard.body.startswith(b"RIFF")
    missing = await through(authz, upstream, agent, "GET", f"/tenants/{A}/calls/call-a-999/recording", SUPPORT)
    assert (missing.decision.allowed, missing.decision.reason) == (False, "record_not_found")


async def test_lists_withhold_the_old_items(authz: Authorizer, upstream: ThreadedServer) -> None:
    events = await through(authz, upstream, user("Analyst"), "GET", f"/tenants/{A}/analytics/events",
                           "analytics.reporting")  # fmt: skip
    assert events.refusal is None and events.review is not None
    items = events.json()["events"]
    assert isinstance(items, list) and len(items) == 40
    # the 4 events past the 760 days the tenant keeps them, and the 6 past the 183 days statistics
    # may use them (Aircall's 6-month statistics retention); the recent ones are given
    old = len(OLD_EVENT_AGES) + MID_EVENT_COUNT
    assert events.review.withheld == tuple(f"/events/{i}" for i in range(old))
    assert items[:old] == [None] * old and all(item is not None for item in items[old:])
    assert set(events.review.policies) == {"retention-limit", "aircall-statistics-retention"}
    assert set(events.review.withheld) <= set(events.review.pointers)
    investigator = user("Security.Investigator")
    old = await through(authz, upstream, investigator, "GET", f"/tenants/{A}/surveys/sv-a-003/responses",
                        "essential.service.security")  # fmt: skip
    responses = old.json()["responses"]
    assert isinstance(responses, list) and responses and all(r is None for r in responses)
    recent = await through(authz, upstream, investigator, "GET", f"/tenants/{A}/surveys/sv-a-001/responses",
                           "essential.service.security")  # fmt: skip
    assert recent.review is not None and recent.review.withheld == ()
    calls = await through(authz, upstream, user("Support.Agent"), "GET", f"/tenants/{A}/calls", SUPPORT)
    assert calls.review is not None and calls.review.withheld == ("/calls/0",)  # call-a-001


async def test_marketing_never_reaches_the_contact_who_opted_out(authz: Authorizer, upstream: ThreadedServer) -> None:
    manager = user("Marketing.Manager")
    refused = await through(authz, upstream, manager, "GET", f"/tenants/{A}/contacts/ct-a-005", MARKETING)
    assert refused.refusal is not None and (refused.status, refused.refusal.reason) == (403, "opted_out")
    assert refused.refusal.policy_ids == ("marketing-respects-contact-opt-out",)
    assert (
        await through(authz, upstream, manager, "GET", f"/tenants/{A}/contacts/ct-a-001", MARKETING)
    ).refusal is None
    listing = await through(authz, upstream, manager, "GET", f"/tenants/{A}/contacts", MARKETING)
    assert listing.review is not None and listing.review.withheld == ("/contacts/4",)
    contacts = listing.json()["contacts"]
    assert isinstance(contacts, list) and contacts[4] is None and len([c for c in contacts if c]) == 11
    helped = await through(authz, upstream, user("Support.Agent"), "GET", f"/tenants/{A}/contacts/ct-a-005", SUPPORT)
    assert helped.refusal is None and helped.json()["email"] == "optout@example.com"


async def test_an_export_reads_the_contact_before_anything_is_sent(authz: Authorizer, upstream: ThreadedServer) -> None:
    rep = user("Sales.Rep")
    fetches = authz.resolvers.fetches
    done = await through(authz, upstream, rep, "POST", f"/tenants/{A}/contacts/ct-a-002/export", "sales", "salesforce")
    assert done.decision.allowed and not done.decision.inspects_response and done.status == 200
    assert done.json()["contact_id"] == "ct-a-002"
    assert authz.resolvers.fetches > fetches  # the contact's facts were fetched before forwarding
    missing = await through(authz, upstream, rep, "POST", f"/tenants/{A}/contacts/ct-a-999/export", "sales",
                            "salesforce")  # fmt: skip
    assert (missing.decision.allowed, missing.decision.status, missing.decision.reason) == (
        False, 403, "record_not_found",
    )  # fmt: skip
