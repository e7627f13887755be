"""What `gateway demo` prints and what `make load` sends keep answering as they say, in any year.

The reference services run with their fixture clock at today, a year ahead and ten years ahead; the
shipped policies decide at that same clock (as a gateway on a machine whose clock says that date
would), a few hours after the services started and again weeks later. Each request goes through the
real parts of the request path: the dev IdP's claims turned into a principal as the authenticator
does, the route map, the Cedar decision, the real services over loopback, and the review of their
answer (retention and opt-outs are decided on the record the services return).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import aiohttp
import pytest

from gateway.authz.authorizer import Authorizer
from gateway.authz.settings import AuthzSettings
from gateway.demo import fixtures
from gateway.demo.stack import DemoCall, demo_calls
from gateway.demo.tenants import CONTOSO_TENANT
from gateway.demo.upstream import create_upstream_app
from gateway.identity.claims import principal_from_claims
from gateway.identity.devtokens import token_claims
from gateway.identity.principal import Principal
from load.measure.mix import MixEntry, realistic_mix
from tests.support.servers import ThreadedServer, serve

ROOT = Path(__file__).resolve().parents[2]
POLICIES = ROOT / "policies"
ROUTE_MAPS = (ROOT / "gateway" / "adapters" / "reference.toml", ROOT / "gateway" / "adapters" / "gmail.toml")
AHEAD = {"today": timedelta(0), "1 year": timedelta(days=366), "10 years": timedelta(days=3653)}
#: How long after the services' start the gateway decides: at once, and weeks later (within the margin).
UPTIMES = (timedelta(hours=3), timedelta(days=fixtures.AGE_MARGIN_BELOW_DAYS - 1))


def principal(tenant: str, *, user: str | None = None, app: str | None = None, roles: tuple[str, ...] = (),
              version: int = 2) -> Principal:  # fmt: skip
    """The principal the authenticator makes of the dev IdP's token for this caller."""
    claims = token_claims(tenant, user=user, app=app, roles=roles, version=version)
    return principal_from_claims(claims, tenant, f"{version}.0", float(claims["exp"]))


@dataclass(frozen=True)
class Outcome:
    status: int
    masked: tuple[str, ...]
    withheld: tuple[str, ...]
    body: bytes


@dataclass
class Clocked:
    """The reference services stamped at ``started`` and an authorizer deciding ``uptime`` later."""

    authz: Authorizer
    upstream: ThreadedServer
    started: datetime

    async def send(self, who: Principal, method: str, path: str, purpose: str, *, uptime: timedelta,
                   headers: tuple[tuple[str, str], ...] = (), body: str | None = None) -> Outcome:  # fmt: skip
        now = (self.started + uptime).timestamp()
        sent = dict(headers)
        recipient = next((v for k, v in sent.items() if k.lower() == "x-recipient"), None)
        data = body.encode() if body is not None else None
        match = self.authz.match(method, path)
        assert match is not None, path
        decision = await self.authz.authorize(
            who, match, purpose=purpose, recipient=recipient, consent_ref=None, body=data, now=now
        )
        if not decision.allowed:
            return Outcome(decision.status, (), (), b"")
        forwarded = {"X-Gateway-Tenant": who.tenant, "X-Gateway-Principal": who.id, "X-Gateway-Purpose": purpose}
        if recipient:
            forwarded["X-Recipient"] = recipient
        if data is not None:
            forwarded["Content-Type"] = "application/json"
        async with (
            aiohttp.ClientSession() as session,
            session.request(method, self.upstream.url + path, headers=forwarded, data=data) as response,
        ):
            answer = await response.read()
            content_type = response.headers.get("Content-Type", "")
            status = response.status
        if not decision.inspects_response:
            return Outcome(status, (), (), answer)
        review = self.authz.review_response(decision, status, content_type, answer, now)
        if review.refusal is not None:
            return Outcome(review.refusal.status, (), (), b"")
        return Outcome(status, tuple(review.pointers), tuple(review.withheld), review.body)


@pytest.fixture(scope="module", params=list(AHEAD), ids=list(AHEAD))
def services(request: pytest.FixtureRequest) -> Iterator[tuple[ThreadedServer, datetime]]:
    started = fixtures.system_clock() + AHEAD[request.param]
    with serve(create_upstream_app(started)) as upstream:
        yield upstream, started


@pytest.fixture
async def clocked(services: tuple[ThreadedServer, datetime]) -> AsyncIterator[Clocked]:
    upstream, started = services
    authz = Authorizer.load(AuthzSettings(POLICIES, ROUTE_MAPS, upstream.url, watch=False))
    await authz.start()
    try:
        yield Clocked(authz, upstream, started)
    finally:
        await authz.close()


def demo_principal(call: DemoCall) -> Principal:
    spec = dict(call.token)
    roles = tuple(spec.pop("roles", ()))
    return principal(spec.pop("tenant"), user=spec.get("user"), app=spec.get("app"), roles=roles,
                     version=int(spec.get("version", 2)))  # fmt: skip


CALLS = demo_calls(POLICIES)


@pytest.mark.parametrize("call", CALLS, ids=[f"{c.pack}: {c.title[:50]}" for c in CALLS])
async def test_every_printed_demo_call_answers_as_its_comment_says(clocked: Clocked, call: DemoCall) -> None:
    for uptime in UPTIMES:
        outcome = await clocked.send(demo_principal(call), call.method, call.path, call.purpose, uptime=uptime,
                                     headers=call.headers, body=call.body)  # fmt: skip
        if call.expect == "allow":
            assert 200 <= outcome.status < 300, (call.title, outcome.status)
        else:
            assert outcome.status == 403, (call.title, outcome.status)


def mix_principal(entry: MixEntry) -> Principal:
    caller = entry.caller
    assert caller is not None
    return principal(caller.tenant, user=caller.user, app=caller.app, roles=caller.roles, version=caller.version)


DECIDED = [e for e in realistic_mix().entries if e.caller is not None and not e.expired]


@pytest.mark.parametrize("entry", DECIDED, ids=[e.title for e in DECIDED])
async def test_the_load_mix_gets_the_answers_it_expects(clocked: Clocked, entry: MixEntry) -> None:
    assert entry.purpose is not None
    for uptime in UPTIMES:
        outcome = await clocked.send(mix_principal(entry), entry.method, entry.path, entry.purpose, uptime=uptime,
                                     headers=entry.headers, body=entry.body)  # fmt: skip
        assert outcome.status == entry.expect, (entry.title, outcome.status)
        if entry.masked:
            assert outcome.masked, entry.title  # X-Redacted-Fields would name them


async def test_an_analyst_sees_the_recent_events_and_never_the_old_ones(clocked: Clocked) -> None:
    """The analytics listing: the events past retention withheld, the recent ones given, in any year."""
    analyst = principal(CONTOSO_TENANT, user="analyst", roles=("Analyst",))
    path = f"/tenants/{CONTOSO_TENANT}/analytics/events"
    old, mid = len(fixtures.OLD_EVENT_AGES), fixtures.MID_EVENT_COUNT
    seen = set()
    for uptime in UPTIMES:
        outcome = await clocked.send(analyst, "GET", path, "analytics.reporting", uptime=uptime)
        assert outcome.status == 200
        withheld = {int(pointer.rsplit("/", 1)[1]) for pointer in outcome.withheld}
        assert set(range(old)) <= withheld  # past the tenant's analytics retention
        assert withheld <= set(range(old + mid))  # the recent ones always pass
        seen.add(frozenset(withheld))
    assert len(seen) == 1  # the same events whatever the uptime within the margin
