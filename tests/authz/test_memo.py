"""The whole-decision memo and the route-match memo of ``Authorizer``: what a repeat reuses, and when
it must not (another token, the token's ``exp``, a policy that reads the time, a lifted body, a
reload). Against the real reference services and the shipped base policies."""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime

import aiohttp
import pytest

from gateway.authz.authorizer import DECISION_MEMO_SECONDS, Authorizer
from gateway.authz.decision import Decision
from gateway.authz.settings import AuthzSettings
from gateway.demo.upstream import create_upstream_app
from gateway.identity.principal import Principal
from tests.authz.support import POLICIES, ROUTE_MAPS, USER_1, USER_2, A, user
from tests.support.servers import ThreadedServer, serve

SUPPORT = "essential.service.operations.support"
CONTACT = f"/tenants/{A}/contacts/ct-a-001"


@pytest.fixture(scope="module")
def upstream() -> Iterator[ThreadedServer]:
    with serve(create_upstream_app()) as server:
        yield server


@pytest.fixture
async def authorizer(upstream: ThreadedServer) -> AsyncIterator[Authorizer]:
    authz = Authorizer.load(
        AuthzSettings(policies_dir=POLICIES, route_maps=ROUTE_MAPS, resolver_url=upstream.url, watch=False)
    )
    await authz.start()
    try:
        yield authz
    finally:
        await authz.close()


async def ask(
    authz: Authorizer, principal: Principal, path: str, now: float, *, method: str = "GET",
    purpose: str = SUPPORT, consent_ref: str | None = None, body: bytes | None = None,
) -> Decision:
    match = authz.match(method, path, path.encode())
    assert match is not None, path
    return await authz.authorize(
        principal, match, purpose=purpose, recipient=None, consent_ref=consent_ref, body=body, now=now
    )


def second_start() -> float:
    """A time a little into the current second, so ``+0.5`` stays in it."""
    return math.floor(time.time()) + 0.1


async def test_a_repeat_gets_the_same_decision_and_a_change_of_input_does_not(authorizer: Authorizer) -> None:
    agent, now = user("Support.Agent"), second_start()
    first = await ask(authorizer, agent, CONTACT, now)
    assert first.allowed
    assert await ask(authorizer, agent, CONTACT, now + 0.5) is first
    # another purpose, another record, another token of the same person: decided again
    other_purpose = await ask(authorizer, agent, CONTACT, now, purpose="essential.service")
    assert other_purpose is not first
    assert await ask(authorizer, agent, f"/tenants/{A}/contacts/ct-a-002", now) is not first
    same_person = dataclasses.replace(agent)  # a second token: its own verified principal object
    assert same_person == agent and await ask(authorizer, same_person, CONTACT, now) is not first


async def test_the_memo_lasts_a_moment_and_never_past_the_token(authorizer: Authorizer) -> None:
    now = second_start()
    agent = user("Support.Agent")
    first = await ask(authorizer, agent, CONTACT, now)
    assert await ask(authorizer, agent, CONTACT, now + DECISION_MEMO_SECONDS + 0.01) is not first
    short = dataclasses.replace(agent, expires_at=now + 0.3)
    decided = await ask(authorizer, short, CONTACT, now)
    assert await ask(authorizer, short, CONTACT, now + 0.2) is decided
    assert await ask(authorizer, short, CONTACT, now + 0.31) is not decided


async def test_a_decision_that_reads_the_time_holds_for_its_second_only(
    authorizer: Authorizer, upstream: ThreadedServer
) -> None:
    owner, reader = user(oid=USER_2), user(oid=USER_1)
    expires = datetime.fromtimestamp(time.time() + 3600, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    async with aiohttp.ClientSession() as session, session.post(
        f"{upstream.url}/consents",
        json={"grantee": USER_1, "resources": ["msg-1"], "purpose": SUPPORT, "expires_at": expires},
        headers={"X-Gateway-Tenant": A, "X-Gateway-Principal": owner.id},
    ) as answer:
        consent_id = (await answer.json())["id"]
    message = f"/gmail/v1/users/{USER_2}/messages/msg-1"
    late_in_a_second = math.floor(time.time()) + 0.7
    with_consent = await ask(authorizer, reader, message, late_in_a_second, consent_ref=consent_id)
    assert with_consent.allowed  # gmail-read-with-consent compares context.time with the consent's expiry
    assert await ask(authorizer, reader, message, late_in_a_second + 0.2, consent_ref=consent_id) is with_consent
    next_second = late_in_a_second + 0.5  # within the memo's moment, but another second
    assert await ask(authorizer, reader, message, next_second, consent_ref=consent_id) is not with_consent
    # the contact read reads no time: the same half second later is still the same decision
    agent = user("Support.Agent")
    contact = await ask(authorizer, agent, CONTACT, late_in_a_second)
    assert await ask(authorizer, agent, CONTACT, next_second) is contact


async def test_a_lifted_body_is_decided_every_time(authorizer: Authorizer) -> None:
    manager, now = user("Marketing.Manager"), second_start()
    path = f"/tenants/{A}/surveys/sv-a-001/invitations"
    body = b'{"email":"new@example.com"}'
    ok = await ask(authorizer, manager, path, now, method="POST", purpose="marketing.communications.email", body=body)
    assert ok.allowed
    again = await ask(authorizer, manager, path, now, method="POST", purpose="marketing.communications.email",
                      body=b'{"email":"optout@example.com"}')
    assert not again.allowed and again.policy_ids == ("invitations-respect-opt-outs",)


async def test_bad_input_is_never_remembered(authorizer: Authorizer) -> None:
    agent, now = user("Support.Agent"), second_start()
    bad = await ask(authorizer, agent, CONTACT, now, purpose="no.such.purpose")
    assert (bad.status, bad.reason) == (400, "unknown_purpose")
    assert len(authorizer.engine.decision_memo) == 0
    assert await ask(authorizer, agent, CONTACT, now, purpose="no.such.purpose") is not bad


async def test_a_reload_starts_new_memos(authorizer: Authorizer) -> None:
    agent, now = user("Support.Agent"), second_start()
    first = await ask(authorizer, agent, CONTACT, now)
    match = authorizer.match("GET", CONTACT, CONTACT.encode())
    assert authorizer.match("GET", CONTACT, CONTACT.encode()) is match  # remembered
    assert authorizer.reload() is True
    assert len(authorizer.engine.decision_memo) == 0 and len(authorizer.engine.route_matches) == 0
    rematched = authorizer.match("GET", CONTACT, CONTACT.encode())
    assert rematched is not None and rematched is not match and rematched.route.id == match.route.id
    again = await ask(authorizer, agent, CONTACT, now)
    assert again is not first and again == dataclasses.replace(first, basis=again.basis)


async def test_an_unmapped_path_is_remembered_as_unmapped(authorizer: Authorizer) -> None:
    assert authorizer.match("GET", "/nowhere", b"/nowhere") is None
    assert authorizer.engine.route_matches.get(("GET", "/nowhere", b"/nowhere")) == (None,)
    assert authorizer.match("GET", "/nowhere", b"/nowhere") is None
    # the decoded path must agree with the raw one: a disagreement is refused, and remembered as such
    assert authorizer.match("GET", CONTACT, b"/tenants/other/contacts/ct-a-001") is None
    assert authorizer.match("GET", CONTACT, CONTACT.encode()) is not None
