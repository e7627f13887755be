"""Authorization through the proxy: real tokens from the dev IdP, the reference services upstream,
the shipped policies. Each test is one promise of the role model or the request contract."""

from __future__ import annotations

import base64
import contextlib
import json
import sqlite3
from typing import Any

import pytest

from gateway.audit.query import show_decision
from gateway.demo.tenants import CONTOSO_TENANT as A
from gateway.demo.tenants import FABRIKAM_TENANT as B
from tests.support.clock import rfc3339_in
from tests.support.poll import wait_until
from tests.support.stack import Reply, Stack

SUPPORT = "essential.service.operations.support"


def claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def reasons(reply: Reply) -> list[str]:
    return [r["policy"] for r in reply.json()["reasons"]]


# -- purpose ----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("purpose", "detail"), [(None, "X-Purpose"), ("sales.nonsense", "unknown"),
                                                 ("essential.service.operations.support.extra", "unknown")])
def test_missing_or_unknown_purpose_is_400(stack: Stack, purpose: str | None, detail: str) -> None:
    reply = stack.http("GET", f"/tenants/{A}/contacts/ct-a-001", token=stack.mint(A, roles=["Support.Agent"]),
                       purpose=purpose)
    assert reply.status == 400, reply.body
    assert reply.header("Content-Type") == "application/problem+json"
    assert reply.json()["decision_id"] == reply.header("X-Decision-Id")


def test_purpose_limitation_by_category(stack: Stack) -> None:
    token = stack.mint(A, roles=["Support.Agent"])
    assert stack.http("GET", f"/tenants/{A}/contacts/ct-a-001", token=token, purpose=SUPPORT).status == 200
    refused = stack.http("GET", f"/tenants/{A}/contacts/ct-a-001", token=token, purpose="marketing.advertising")
    assert refused.status == 403
    assert "purpose-limitation" in reasons(refused) or refused.json()["reasons"]


# -- roles ------------------------------------------------------------------------------------------

def test_role_based_access(stack: Stack) -> None:
    analyst = stack.mint(A, roles=["Analyst"])
    ok = stack.http("GET", f"/tenants/{A}/surveys/sv-a-001/results", token=analyst, purpose="analytics.reporting")
    assert ok.status == 200
    refused = stack.http("GET", f"/tenants/{A}/surveys/sv-a-001/responses", token=analyst,
                         purpose="analytics.reporting")
    assert refused.status == 403
    no_role = stack.mint(A)
    assert stack.http("GET", f"/tenants/{A}/payments/pay-a-005", token=no_role, purpose=SUPPORT).status == 403


def test_tenant_isolation(stack: Stack) -> None:
    token = stack.mint(A, roles=["Support.Agent"])
    refused = stack.http("GET", f"/tenants/{B}/contacts/ct-b-001", token=token, purpose=SUPPORT)
    assert refused.status == 403
    assert "tenant-isolation" in reasons(refused)
    own = stack.mint(B, roles=["Support.Agent"])
    assert stack.http("GET", f"/tenants/{B}/contacts/ct-b-001", token=own, purpose=SUPPORT).status == 200


def test_support_sees_only_last_four_card_digits(stack: Stack) -> None:
    token = stack.mint(A, roles=["Support.Agent"])
    reply = stack.http("GET", f"/tenants/{A}/payments/pay-a-005", token=token, purpose=SUPPORT)
    assert reply.status == 200
    card = reply.json()["card_number"]
    digits = [c for c in card if c.isdigit()]
    assert len(digits) <= 4
    assert "/card_number" in (reply.header("X-Redacted-Fields") or "").split(",")
    service = stack.mint(A, app="payments-backend", roles=["Service.Payments"])
    full = stack.http("GET", f"/tenants/{A}/payments/pay-a-005", token=service,
                      purpose="essential.service.payment_processing")
    assert full.status == 200
    assert len(full.json()["card_number"]) == 16 and full.json()["card_number"].isdigit()
    assert full.header("X-Redacted-Fields") is None


def test_service_roles_need_app_only_tokens(stack: Stack) -> None:
    human = stack.mint(A, roles=["Service.Payments"])
    refused = stack.http("GET", f"/tenants/{A}/payments/pay-a-005", token=human,
                         purpose="essential.service.payment_processing")
    assert refused.status == 403
    assert reasons(refused) == ["role-kind-mismatch"]


# -- transfers --------------------------------------------------------------------------------------

def test_export_only_to_listed_recipients(stack: Stack) -> None:
    token = stack.mint(A, roles=["Sales.Rep"])
    path = f"/tenants/{A}/contacts/ct-a-001/export"
    ok = stack.http("POST", path, token=token, purpose="essential.service", headers={"X-Recipient": "Salesforce"})
    assert ok.status == 200, ok.body
    assert ok.json()["recipient"] == "salesforce"
    refused = stack.http("POST", path, token=token, purpose="essential.service",
                         headers={"X-Recipient": "data-broker"})
    assert refused.status == 403
    missing = stack.http("POST", path, token=token, purpose="essential.service")
    assert missing.status == 400


# -- consent by reference ---------------------------------------------------------------------------

def test_reading_someone_elses_mail_needs_their_consent(stack: Stack) -> None:
    owner_token = stack.mint(A, user="mailbox-owner")
    owner = claims(owner_token)["oid"]
    listing = stack.http("GET", "/gmail/v1/users/me/messages", token=owner_token, purpose="essential.service")
    assert listing.status == 200, listing.body
    first, second = (m["id"] for m in listing.json()["messages"][:2])

    agent_token = stack.mint(A, user="support-agent-1", roles=["Support.Agent"])
    agent = claims(agent_token)["oid"]
    path = f"/gmail/v1/users/{owner}/messages/{first}"
    assert stack.http("GET", path, token=agent_token, purpose=SUPPORT).status == 403

    body = json.dumps({"grantee": agent, "resources": [first], "purpose": SUPPORT,
                       "expires_at": rfc3339_in(days=365)}).encode()
    created = stack.http("POST", "/consents", token=owner_token, purpose="essential.service",
                         headers={"Content-Type": "application/json"}, body=body)
    assert created.status == 201, created.body
    ref = created.json()["id"]

    allowed = stack.http("GET", path, token=agent_token, purpose=SUPPORT, headers={"X-Consent-Ref": ref})
    assert allowed.status == 200, allowed.body
    other = stack.http("GET", f"/gmail/v1/users/{owner}/messages/{second}", token=agent_token, purpose=SUPPORT,
                       headers={"X-Consent-Ref": ref})
    assert other.status == 403
    stranger = stack.mint(A, user="someone-else", roles=["Support.Agent"])
    assert stack.http("GET", path, token=stranger, purpose=SUPPORT, headers={"X-Consent-Ref": ref}).status == 403
    bogus = stack.http("GET", path, token=agent_token, purpose=SUPPORT,
                       headers={"X-Consent-Ref": "00000000-0000-4000-8000-000000000000"})
    assert bogus.status == 403


def test_gmail_data_never_for_advertising(stack: Stack) -> None:
    token = stack.mint(A, app="mail-backend", roles=["Service.Mail"])
    assert stack.http("GET", "/gmail/v1/users/me/messages", token=token, purpose="essential.service").status == 200
    assert stack.http("GET", "/gmail/v1/users/me/messages", token=token,
                      purpose="marketing.advertising").status == 403


# -- default deny and path tricks -------------------------------------------------------------------

@pytest.mark.parametrize(("method", "path"), [("GET", "/admin"), ("DELETE", f"/tenants/{A}/contacts/ct-a-001"),
                                              ("GET", f"/tenants/{A}/secrets"), ("PATCH", "/consents/x")])
def test_unmapped_routes_are_denied_by_default(stack: Stack, method: str, path: str) -> None:
    reply = stack.http(method, path, token=stack.mint(A, roles=["Security.Investigator"]),
                       purpose="essential.service.security")
    assert reply.status == 403
    assert reasons(reply) == ["default-deny"]


@pytest.mark.parametrize(
    "path",
    [
        f"/tenants/{A}/contacts/../../tenants/{B}/contacts/ct-b-001",
        f"/tenants/{A}/contacts/%2e%2e/%2e%2e/tenants/{B}/contacts/ct-b-001",
        f"/tenants/{A}/contacts/..%2F..%2Ftenants%2F{B}%2Fcontacts%2Fct-b-001",
        f"/tenants/{A}%2F..%2F{B}/contacts/ct-b-001",
        f"//tenants/{B}/contacts/ct-b-001",
        f"/tenants/{A}/contacts/ct-a-001/..;/../../{B}/contacts/ct-b-001",
        f"/TENANTS/{B}/contacts/ct-b-001",
        f"/tenants/{B.upper()}/contacts/ct-b-001",
        f"/tenants/{A}/contacts/ct-b-001;tenant={B}",
        f"/tenants/{A}/contacts/ct-b-001%00",
        f"/tenants/{A}/./contacts/./../contacts/ct-a-001/../../../{B}/contacts/ct-b-001",
    ],
)
def test_path_tricks_never_reach_another_tenant(stack: Stack, path: str) -> None:
    token = stack.mint(A, roles=["Support.Agent"])
    reply = stack.http("GET", path, token=token, purpose=SUPPORT)
    assert reply.status in (400, 403, 404), (reply.status, reply.body[:200])
    assert b"ct-b-001" not in reply.body or reply.status != 200


# -- every outcome is audited -----------------------------------------------------------------------

def test_every_response_is_audited(stack: Stack) -> None:
    support = stack.mint(A, roles=["Support.Agent"])
    replies = [
        stack.http("GET", f"/tenants/{A}/contacts/ct-a-001", token=support, purpose=SUPPORT),
        stack.http("GET", f"/tenants/{A}/contacts/ct-a-001", token=support),
        stack.http("GET", f"/tenants/{A}/contacts/ct-a-001", purpose=SUPPORT),
        stack.http("GET", f"/tenants/{A}/contacts/ct-a-001", token="garbage", purpose=SUPPORT),
        stack.http("GET", f"/tenants/{B}/contacts/ct-b-001", token=support, purpose=SUPPORT),
        stack.http("GET", "/nowhere", token=support, purpose=SUPPORT),
    ]
    assert [r.status for r in replies] == [200, 400, 401, 401, 403, 403]
    ids = [r.header("X-Decision-Id") for r in replies]
    assert all(ids)
    found: dict[str, Any] = {}

    def all_found() -> bool:
        with contextlib.closing(sqlite3.connect(f"file:{stack.audit_path}?mode=ro", uri=True)) as conn:
            conn.row_factory = sqlite3.Row
            for decision_id in ids:
                row = show_decision(conn, decision_id) if decision_id not in found else None
                if row:
                    found[decision_id] = row
        return len(found) == len(ids)

    wait_until(all_found, message=lambda: f"all {len(ids)} decisions in the audit store ({len(found)} there)")
    assert set(found) == set(ids)
    first = found[ids[0]]
    text = json.dumps(first)
    assert support not in text  # never the raw token
    assert first["decision"] == "allow" and first["status"] == 200
    assert found[ids[4]]["decision"] == "deny"
    assert "tenant-isolation" in json.dumps(found[ids[4]])
    assert first["purpose"] == SUPPORT
