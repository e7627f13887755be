"""The five wrong allows of issue 19, through the gateway in front of the reference services, and
the legitimate neighbour of each, which must keep working. Real tokens, real upstream, shipped packs."""

from __future__ import annotations

import email.utils
import json
from datetime import datetime

from gateway.demo.fixtures import OPTOUT_CONTACT_NUMBER
from gateway.demo.tenants import CONTOSO_TENANT as A
from gateway.demo.tenants import FABRIKAM_TENANT as B
from tests.support.stack import Reply, Stack

OPTED_OUT = f"ct-a-{OPTOUT_CONTACT_NUMBER:03d}"


def policies(reply: Reply) -> list[str]:
    return [r["policy"] for r in reply.json()["reasons"]]


def test_a_complete_card_number_reaches_only_the_payment_service(stack: Stack) -> None:
    path = f"/tenants/{A}/payments/pay-a-006"
    purpose = "essential.service.payment_processing"
    billing_app = stack.mint(A, app="billing-tool", roles=["Billing.Admin"])
    refused = stack.http("GET", path, token=billing_app, purpose=purpose)
    assert refused.status == 403 and policies(refused) == ["role-kind-mismatch"]
    assert b"card_number" not in refused.body

    person = stack.http("GET", path, token=stack.mint(A, roles=["Billing.Admin"]), purpose=purpose)
    assert person.status == 200, person.body
    assert person.json()["card_number"].startswith("*" * 12)
    assert "/card_number" in (person.header("X-Redacted-Fields") or "").split(",")

    service = stack.http("GET", path, token=stack.mint(A, app="payments-backend", roles=["Service.Payments"]),
                         purpose=purpose)
    assert service.status == 200 and service.json()["card_number"].isdigit()
    assert service.header("X-Redacted-Fields") is None


def test_the_tenant_list_gives_only_the_callers_own_tenant(stack: Stack) -> None:
    for roles, purpose in [
        (["Engineering.Operator"], "essential.service.operations"),
        (["Security.Investigator"], "essential.service.security"),
        (["Legal.Officer"], "essential.legal_obligation"),
    ]:
        for tenant, other in ((A, B), (B, A)):
            reply = stack.http("GET", "/tenants", token=stack.mint(tenant, roles=roles), purpose=purpose)
            assert reply.status == 200, (roles, reply.body)
            items = reply.json()["tenants"]
            given = [item for item in items if item is not None]
            assert [item["id"] for item in given] == [tenant], (roles, items)
            assert other not in reply.body.decode()
            withheld = (reply.header("X-Redacted-Fields") or "").split(",")
            assert any(p.startswith("/tenants/") for p in withheld)
    own = stack.http("GET", f"/tenants/{A}", token=stack.mint(A, roles=["Engineering.Operator"]),
                     purpose="essential.service.operations")
    assert own.status == 200 and own.json()["id"] == A


def test_an_opted_out_contact_never_reaches_the_marketing_tool(stack: Stack) -> None:
    rep = stack.mint(A, roles=["Sales.Rep"])
    path = f"/tenants/{A}/contacts/{OPTED_OUT}/export"
    refused = stack.http("POST", path, token=rep, purpose="sales", headers={"X-Recipient": "pardot"})
    assert refused.status == 403, refused.body
    assert "suppression-list-holds-for-marketing-tools" in policies(refused)
    also = stack.http("POST", path, token=rep, purpose="marketing.communications", headers={"X-Recipient": "pardot"})
    assert also.status == 403

    sync = stack.mint(A, app="crm-sync", roles=["Service.CrmSync"])
    kept = stack.http("POST", path, token=sync, purpose="essential.service", headers={"X-Recipient": "salesforce"})
    assert kept.status == 200, kept.body
    ordinary = stack.http("POST", f"/tenants/{A}/contacts/ct-a-001/export", token=rep, purpose="sales",
                          headers={"X-Recipient": "pardot"})
    assert ordinary.status == 200, ordinary.body


def test_statistics_use_six_months_of_usage_events(stack: Stack) -> None:
    reply = stack.http("GET", f"/tenants/{A}/analytics/events", token=stack.mint(A, roles=["Analyst"]),
                       purpose="analytics.reporting")
    assert reply.status == 200, reply.body
    events = reply.json()["events"]
    given = [e for e in events if e is not None]
    assert given, "recent events are still given to an analyst"
    assert len(given) < len(events)
    header = reply.header("Date")
    assert header is not None
    # every event given is younger than 183 days at the gateway's clock (the fixture ages are relative)
    now = email.utils.parsedate_to_datetime(header)
    for event in given:
        age = now - datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00"))
        assert age.days < 183, event


def test_an_address_spelled_otherwise_is_still_the_opted_out_address(stack: Stack) -> None:
    manager = stack.mint(A, roles=["Marketing.Manager"])
    path = f"/tenants/{A}/surveys/sv-a-001/invitations"
    purpose = "marketing.communications.email"

    def invite(address: str) -> Reply:
        return stack.http("POST", path, token=manager, purpose=purpose,
                          headers={"Content-Type": "application/json"},
                          body=json.dumps({"email": address}).encode())

    quoted = invite('"optout"@example.com')
    assert quoted.status == 403 and policies(quoted) == ["invitations-respect-opt-outs"]
    assert invite('"OptOut"@EXAMPLE.COM').status == 403
    trailing_dot = invite("optout@example.com.")
    assert trailing_dot.status == 400, trailing_dot.body
    assert trailing_dot.header("Content-Type") == "application/problem+json"
    assert invite("opt\u200bout@example.com").status == 400
    ordinary = invite("new.customer@example.com")
    assert ordinary.status == 202, ordinary.body
