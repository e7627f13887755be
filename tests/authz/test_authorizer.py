"""``Authorizer`` end to end over its own parts: route maps, input checks, resolvers against the real
reference services on loopback, Cedar, and masking of the services' real answers."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest

from gateway.authz.authorizer import Authorizer
from gateway.authz.masking import apply_masks
from gateway.authz.settings import AuthzSettings
from gateway.demo.upstream import create_upstream_app
from gateway.identity.principal import Principal
from tests.authz.support import POLICIES, ROUTE_MAPS, USER_1, USER_2, A, B, app, user
from tests.support.clock import rfc3339_in
from tests.support.servers import ThreadedServer, free_port, serve

SUPPORT = "essential.service.operations.support"


@pytest.fixture(scope="module")
def upstream() -> Iterator[ThreadedServer]:
    with serve(create_upstream_app()) as server:
        yield server


def settings(url: str, **changes: object) -> AuthzSettings:
    values: dict[str, object] = {
        "policies_dir": POLICIES,
        "route_maps": ROUTE_MAPS,
        "resolver_url": url,
        "watch": False,
        "validate_requests": True,
    }
    values.update(changes)
    return AuthzSettings(**values)  # type: ignore[arg-type]


@pytest.fixture
async def authorizer(upstream: ThreadedServer) -> AsyncIterator[Authorizer]:
    authz = Authorizer.load(settings(upstream.url))
    await authz.start()
    try:
        yield authz
    finally:
        await authz.close()


async def ask(
    authz: Authorizer,
    principal: Principal,
    method: str,
    path: str,
    purpose: str | None = "essential.service",
    recipient: str | None = None,
    consent_ref: str | None = None,
    body: bytes | None = None,
) -> object:
    match = authz.match(method, path)
    assert match is not None, f"{method} {path} is unmapped"
    return await authz.authorize(
        principal,
        match,
        purpose=purpose,
        recipient=recipient,
        consent_ref=consent_ref,
        body=body,
        now=time.time(),
    )


async def fetch(upstream: ThreadedServer, path: str, principal: Principal) -> bytes:
    headers = {"X-Gateway-Tenant": principal.tenant, "X-Gateway-Principal": principal.id}
    async with (
        aiohttp.ClientSession() as session,
        session.get(upstream.url + path, headers=headers) as response,
    ):
        assert response.status == 200
        return await response.read()


async def test_ready_and_hash(authorizer: Authorizer) -> None:
    assert authorizer.ready and len(authorizer.policy_hash) == 16 and authorizer.last_error is None


async def test_role_purpose_and_tenant(authorizer: Authorizer) -> None:
    agent = user("Support.Agent")
    decision = await ask(authorizer, agent, "GET", f"/tenants/{A}/contacts/ct-a-001", SUPPORT)
    assert decision.allowed and decision.status == 200 and decision.policy_ids == ("support-agent-reads",)  # type: ignore[attr-defined]
    assert decision.resource_tenant == A and decision.route == "/tenants/{tid}/contacts/{id}"  # type: ignore[attr-defined]
    other = await ask(authorizer, agent, "GET", f"/tenants/{B}/contacts/ct-b-001", SUPPORT)
    assert (other.allowed, other.status, other.policy_ids) == (False, 403, ("tenant-isolation",))  # type: ignore[attr-defined]
    analyst = await ask(
        authorizer, user("Analyst"), "GET", f"/tenants/{A}/surveys/sv-a-001/responses", "analytics.reporting"
    )
    assert analyst.policy_ids == ("purpose-limitation",)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("purpose", "reason"),
    [
        (None, "missing_purpose"),
        ("", "missing_purpose"),
        ("essential.service.nonsense", "unknown_purpose"),
        ("Essential.Service", "unknown_purpose"),
        ("x" * 500, "unknown_purpose"),
    ],
)
async def test_missing_or_unknown_purpose_is_a_400(authorizer: Authorizer, purpose: str | None, reason: str) -> None:
    decision = await ask(authorizer, user("Support.Agent"), "GET", f"/tenants/{A}/contacts", purpose)
    assert (decision.allowed, decision.status, decision.reason) == (False, 400, reason)  # type: ignore[attr-defined]
    assert decision.detail  # type: ignore[attr-defined]


async def test_card_number_masked_on_the_real_payment(authorizer: Authorizer, upstream: ThreadedServer) -> None:
    agent = user("Support.Agent")
    path = f"/tenants/{A}/payments/pay-a-001"
    decision = await ask(authorizer, agent, "GET", path, SUPPORT)
    assert decision.allowed  # type: ignore[attr-defined]
    raw = await fetch(upstream, path, agent)
    original = json.loads(raw)["card_number"]
    masked, pointers = apply_masks(raw, decision.masks)  # type: ignore[attr-defined]
    doc = json.loads(masked)
    assert doc["card_number"] == "*" * 12 + original[-4:]
    assert set(pointers) == {"/card_number", "/expiry"}
    assert doc["amount"] == json.loads(raw)["amount"]
    service = app("Service.Payments")
    decision = await ask(authorizer, service, "GET", path, "essential.service.payment_processing")
    assert apply_masks(raw, decision.masks) == (raw, ())  # type: ignore[attr-defined]


async def test_human_versus_automated(authorizer: Authorizer) -> None:
    path = f"/tenants/{A}/payments/pay-a-001"
    purpose = "essential.service.payment_processing"
    assert (await ask(authorizer, app("Service.Payments"), "GET", path, purpose)).allowed  # type: ignore[attr-defined]
    denied = await ask(authorizer, user("Service.Payments"), "GET", path, purpose)
    assert denied.policy_ids == ("role-kind-mismatch",)  # type: ignore[attr-defined]
    assert (denied.status, denied.reason) == (403, "role_kind_mismatch")  # type: ignore[attr-defined]
    as_app = await ask(authorizer, app("Billing.Admin"), "GET", path, purpose)
    assert as_app.policy_ids == ("role-kind-mismatch",)  # type: ignore[attr-defined]
    assert "Billing.Admin" in as_app.reasons[0]["clause"]  # type: ignore[attr-defined]


async def test_export_needs_a_listed_recipient(authorizer: Authorizer) -> None:
    rep = user("Sales.Rep")
    path = f"/tenants/{A}/contacts/ct-a-001/export"
    assert (await ask(authorizer, rep, "POST", path, "sales", recipient="Salesforce")).allowed  # type: ignore[attr-defined]
    denied = await ask(authorizer, rep, "POST", path, "sales", recipient="pardot")
    assert denied.policy_ids == ("export-to-listed-recipients",)  # type: ignore[attr-defined]
    missing = await ask(authorizer, rep, "POST", path, "sales")
    assert (missing.status, missing.reason) == (400, "missing_recipient")  # type: ignore[attr-defined]
    bad = await ask(authorizer, rep, "POST", path, "sales", recipient="sales force!")
    assert (bad.status, bad.reason) == (400, "bad_recipient")  # type: ignore[attr-defined]


async def test_recordings_follow_the_tenant_setting(authorizer: Authorizer) -> None:
    assert (
        await ask(authorizer, user("Support.Agent"), "GET", f"/tenants/{A}/calls/call-a-003/recording", SUPPORT)
    ).allowed  # type: ignore[attr-defined]
    fabrikam_agent = user("Support.Agent", tenant=B)
    denied = await ask(authorizer, fabrikam_agent, "GET", f"/tenants/{B}/calls/call-b-001/transcript", SUPPORT)
    assert denied.policy_ids == ("recordings-only-where-enabled",)  # type: ignore[attr-defined]


async def test_invitations_lift_the_address_and_check_the_opt_out_list(authorizer: Authorizer) -> None:
    manager = user("Marketing.Manager")
    path = f"/tenants/{A}/surveys/sv-a-001/invitations"
    match = authorizer.match("POST", path)
    assert match is not None and authorizer.body_needed(match) == 4096
    ok = await ask(
        authorizer,
        manager,
        "POST",
        path,
        "marketing.communications.email",
        body=b'{"email":"New@Example.com"}',
    )
    assert ok.allowed  # type: ignore[attr-defined]
    refused = await ask(
        authorizer,
        manager,
        "POST",
        path,
        "marketing.communications.email",
        body=b'{"email": "OPTOUT@example.com"}',
    )
    assert refused.policy_ids == ("invitations-respect-opt-outs",)  # type: ignore[attr-defined]
    for body in (b"not json", b"{}", b'{"email": 5}', b'{"email": "no-at-sign"}', None):
        malformed = await ask(authorizer, manager, "POST", path, "marketing.communications.email", body=body)
        assert (malformed.status, malformed.reason) == (400, "bad_body"), body  # type: ignore[attr-defined]


async def test_consent_by_reference(authorizer: Authorizer, upstream: ThreadedServer) -> None:
    owner, reader = user(oid=USER_2), user(oid=USER_1)
    async with aiohttp.ClientSession() as session:
        answer = await session.post(
            f"{upstream.url}/consents",
            json={
                "grantee": USER_1,
                "resources": ["msg-1"],
                "purpose": "essential.service.operations.support",
                "expires_at": rfc3339_in(days=365),
            },
            headers={"X-Gateway-Tenant": A, "X-Gateway-Principal": owner.id},
        )
        consent_id = (await answer.json())["id"]
    path = f"/gmail/v1/users/{USER_2}/messages/msg-1"
    assert (await ask(authorizer, reader, "GET", path, SUPPORT, consent_ref=consent_id)).allowed  # type: ignore[attr-defined]
    without = await ask(authorizer, reader, "GET", path, SUPPORT)
    assert without.policy_ids == ("default-deny",)  # type: ignore[attr-defined]
    other_message = await ask(
        authorizer, reader, "GET", f"/gmail/v1/users/{USER_2}/messages/msg-2", SUPPORT, consent_ref=consent_id
    )
    assert not other_message.allowed  # type: ignore[attr-defined]
    unknown = await ask(authorizer, reader, "GET", path, SUPPORT, consent_ref="no-such-consent")
    assert not unknown.allowed  # type: ignore[attr-defined]
    bad = await ask(authorizer, reader, "GET", path, SUPPORT, consent_ref="../../etc")
    assert (bad.status, bad.reason) == (400, "bad_consent_ref")  # type: ignore[attr-defined]
    # "me" is the caller: the owner reads their own mailbox.
    assert (await ask(authorizer, owner, "GET", "/gmail/v1/users/me/messages/msg-1")).allowed  # type: ignore[attr-defined]
    # The consent's subject may read the consent; another user may not.
    assert (await ask(authorizer, owner, "GET", f"/consents/{consent_id}")).allowed  # type: ignore[attr-defined]
    assert not (await ask(authorizer, reader, "GET", f"/consents/{consent_id}")).allowed  # type: ignore[attr-defined]


async def test_unmapped_routes_and_path_tricks_are_denied(authorizer: Authorizer) -> None:
    assert authorizer.match("DELETE", f"/tenants/{A}/contacts/ct-a-001") is None
    assert authorizer.match("GET", f"/tenants/{A}/contacts/..%2F..%2F{B}") is None
    # The decoded path the server reports must agree with the raw path.
    raw = f"/tenants/{A}/contacts/ct%2Da%2D001".encode()
    assert authorizer.match("GET", f"/tenants/{A}/contacts/ct-a-001", raw) is not None
    assert authorizer.match("GET", f"/tenants/{B}/contacts/ct-a-001", raw) is None
    assert authorizer.match("GET", f"/tenants/{A}/contacts/..", f"/tenants/{A}/contacts/%2e%2e".encode()) is None
    assert authorizer.unmapped_reasons()[0]["policy"] == "default-deny"


async def test_resolver_failure_denies() -> None:
    authz = Authorizer.load(settings(f"http://127.0.0.1:{free_port()}", resolver_timeout_seconds=0.5))
    await authz.start()
    try:
        decision = await ask(authz, user("Support.Agent"), "GET", f"/tenants/{A}/contacts", SUPPORT)
        assert (decision.allowed, decision.status, decision.reason) == (False, 403, "resolver_error")  # type: ignore[attr-defined]
        assert decision.reasons[0]["policy"] == "fail-closed"  # type: ignore[attr-defined]
    finally:
        await authz.close()
