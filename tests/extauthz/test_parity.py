"""Through Envoy + ext_authz, every answer is the one proxy mode gives the same request.

Each case is sent twice, once through Envoy to the gateway in ext-authz mode and once to a plain
proxy-mode gateway in front of the same reference services; status, the headers the contract names
and the body (less the decision id, which is per request) must be equal. Each request through Envoy
leaves exactly one record in the ext-authz gateway's store, naming the mode that decided it.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.demo.fixtures import OPTOUT_CONTACT_NUMBER
from gateway.demo.tenants import CONTOSO_TENANT as A
from gateway.demo.tenants import FABRIKAM_TENANT as B
from tests.extauthz.conftest import Behind, records
from tests.support.stack import Reply, Stack

SUPPORT = "essential.service.operations.support"
COMPARED_HEADERS = ("content-type", "www-authenticate", "x-redacted-fields")


def comparable(reply: Reply) -> tuple[int, dict[str, str | None], Any]:
    headers = {name: reply.header(name) for name in COMPARED_HEADERS}
    try:
        body: Any = reply.json()
    except ValueError:
        return reply.status, headers, reply.body
    if isinstance(body, dict):
        body.pop("decision_id", None)
    return reply.status, headers, body


def both(behind: Behind, proxy: Stack, method: str, path: str, **kwargs: Any) -> tuple[Reply, Reply, dict[str, Any]]:
    """The same request through Envoy and through proxy mode; Envoy's one new record."""
    before = len(records(behind.gateway.audit_path))
    via_envoy = behind.client.http(method, path, **kwargs)
    direct = proxy.http(method, path, **kwargs)
    assert comparable(via_envoy) == comparable(direct)
    added = records(behind.gateway.audit_path)[before:]
    assert len(added) == 1, added  # one record per request, whichever path decided it
    record = added[0]
    assert via_envoy.header("X-Decision-Id") == record["decision_id"]
    assert via_envoy.headers_named("X-Decision-Id") == [record["decision_id"]]
    return via_envoy, direct, record


def mode(record: dict[str, Any]) -> str:
    return str(json.loads(record["extra"])["mode"])


def test_allowed_on_headers_is_decided_by_the_check(behind: Behind, proxy: Stack) -> None:
    token = behind.client.mint(A, roles=["Support.Agent"])
    reply, _, record = both(behind, proxy, "GET", f"/tenants/{A}/payments", token=token, purpose=SUPPORT)
    assert reply.status == 200 and reply.json()["payments"]
    assert mode(record) == "ext-authz"
    assert record["decision"] == "allow" and record["purpose"] == SUPPORT and record["principal_id"]


@pytest.mark.parametrize(
    ("case", "status"),
    [
        ("no token", 401),
        ("garbage token", 401),
        ("missing purpose", 400),
        ("unknown purpose", 400),
        ("purpose not allowed", 403),
        ("other tenant", 403),
        ("unmapped route", 403),
        ("role without the right", 403),
    ],
)
def test_refusals_are_the_ones_proxy_mode_gives(behind: Behind, proxy: Stack, case: str, status: int) -> None:
    support = behind.client.mint(A, roles=["Support.Agent"])
    contact = f"/tenants/{A}/contacts/ct-a-001"
    requests: dict[str, tuple[str, dict[str, Any]]] = {
        "no token": (contact, {"purpose": SUPPORT}),
        "garbage token": (contact, {"token": "garbage", "purpose": SUPPORT}),
        "missing purpose": (contact, {"token": support}),
        "unknown purpose": (contact, {"token": support, "purpose": "essential.service.nonsense"}),
        "purpose not allowed": (contact, {"token": support, "purpose": "marketing.advertising"}),
        "other tenant": (f"/tenants/{B}/contacts/ct-b-001", {"token": support, "purpose": SUPPORT}),
        "unmapped route": ("/admin/everything", {"token": support, "purpose": SUPPORT}),
        "role without the right": (f"/tenants/{A}/surveys/sv-a-001/responses",
                                   {"token": behind.client.mint(A, roles=["Analyst"]),
                                    "purpose": "analytics.reporting"}),
    }
    path, kwargs = requests[case]
    reply, _, record = both(behind, proxy, "GET", path, **kwargs)
    assert reply.status == status, reply.body
    assert reply.header("Content-Type") == "application/problem+json"
    assert reply.json()["decision_id"] == record["decision_id"]
    assert record["status"] == status and record["decision"] == "deny" and mode(record) == "ext-authz"
    if status == 401:
        assert (reply.header("WWW-Authenticate") or "").startswith("Bearer")
    if status == 403:
        reasons = reply.json()["reasons"]
        assert reasons and all({"policy", "source", "clause"} <= set(r) for r in reasons)


def test_a_masked_route_never_shows_the_card_number(behind: Behind, proxy: Stack, reference_upstream: Any) -> None:
    path = f"/tenants/{A}/payments/pay-a-005"
    raw = proxy.http("GET", path, token=proxy.mint(A, app="payments-backend", roles=["Service.Payments"]),
                     purpose="essential.service.payment_processing")
    card = raw.json()["card_number"]
    assert card.isdigit()

    token = behind.client.mint(A, roles=["Support.Agent"])
    reply, _, record = both(behind, proxy, "GET", path, token=token, purpose=SUPPORT)
    assert reply.status == 200, reply.body
    assert card not in reply.body.decode() and card[:-4] not in reply.body.decode()
    assert reply.json()["card_number"].endswith(card[-4:])
    assert "/card_number" in (reply.header("X-Redacted-Fields") or "").split(",")
    assert mode(record) == "ext-authz-proxy"  # delegated by the check, decided by the proxy path
    assert "/card_number" in record["masked_fields"]
    assert json.loads(record["extra"])["check_decision_id"] != record["decision_id"]

    # The payment service sees it whole through Envoy too (still through the proxy path: the record's
    # age in the answer decides retention).
    service = behind.client.mint(A, app="payments-backend", roles=["Service.Payments"])
    full, _, full_record = both(behind, proxy, "GET", path, token=service,
                                purpose="essential.service.payment_processing")
    assert full.json()["card_number"] == card and full.header("X-Redacted-Fields") is None
    assert mode(full_record) == "ext-authz-proxy"


def test_record_facts_in_the_answer_still_refuse(behind: Behind, proxy: Stack) -> None:
    """pay-a-001 is past the customer's retention: proxy mode refuses it once the answer shows its age."""
    token = behind.client.mint(A, roles=["Support.Agent"])
    reply, direct, record = both(behind, proxy, "GET", f"/tenants/{A}/payments/pay-a-001", token=token,
                                 purpose=SUPPORT)
    assert direct.status == 403 and reply.status == 403
    assert b"card_number" not in reply.body
    assert mode(record) == "ext-authz-proxy" and record["status"] == 403


def test_list_items_withheld_the_same_way(behind: Behind, proxy: Stack) -> None:
    analyst = behind.client.mint(A, roles=["Analyst"])
    reply, _, record = both(behind, proxy, "GET", f"/tenants/{A}/analytics/events", token=analyst,
                            purpose="analytics.reporting")
    assert reply.status == 200 and None in reply.json()["events"]
    assert mode(record) == "ext-authz-proxy"


def test_fields_lifted_from_the_body_are_decided_with_the_body(behind: Behind, proxy: Stack) -> None:
    manager = behind.client.mint(A, roles=["Marketing.Manager"])
    path = f"/tenants/{A}/surveys/sv-a-001/invitations"

    def invite(address: str) -> tuple[Reply, dict[str, Any]]:
        reply, _, record = both(behind, proxy, "POST", path, token=manager, purpose="marketing.communications.email",
                                headers={"Content-Type": "application/json"},
                                body=json.dumps({"email": address}).encode())
        return reply, record

    refused, record = invite("optout@example.com")
    assert refused.status == 403 and mode(record) == "ext-authz-proxy"
    invalid, _ = invite("optout@example.com.")
    assert invalid.status == 400
    allowed, record = invite("someone.new@example.com")
    assert allowed.status < 300, allowed.body
    assert mode(record) == "ext-authz-proxy"


def test_export_with_recipient(behind: Behind, proxy: Stack) -> None:
    rep = behind.client.mint(A, roles=["Sales.Rep"])
    opted_out = f"/tenants/{A}/contacts/ct-a-{OPTOUT_CONTACT_NUMBER:03d}/export"
    refused, _, _ = both(behind, proxy, "POST", opted_out, token=rep, purpose="sales",
                         headers={"X-Recipient": "pardot"})
    assert refused.status == 403
    ok, _, _ = both(behind, proxy, "POST", f"/tenants/{A}/contacts/ct-a-001/export", token=rep, purpose="sales",
                    headers={"X-Recipient": "pardot"})
    assert ok.status == 200, ok.body
    missing, _, _ = both(behind, proxy, "POST", f"/tenants/{A}/contacts/ct-a-001/export", token=rep, purpose="sales")
    assert missing.status == 400
