"""Employee roles count only on delegated tokens, service roles only on app-only tokens (issue 18):
real tokens from the dev IdP, the reference services upstream, the shipped policies and audit store.
Each refused request is one that was answered 200 before the role model was enforced."""

from __future__ import annotations

import contextlib
import sqlite3
from typing import Any

import pytest

from gateway.audit.query import show_decision
from gateway.demo.tenants import CONTOSO_TENANT as A
from tests.support.poll import wait_until
from tests.support.stack import Stack

MAILBOX_OWNER = "0b1c2d3e-0000-4000-8000-00000000a11c"


def audited(stack: Stack, decision_id: str) -> dict[str, Any]:
    """The audit record of a decision (async mode: queryable within a second), bounded wait."""

    def stored() -> dict[str, Any] | None:
        with contextlib.closing(sqlite3.connect(f"file:{stack.audit_path}?mode=ro", uri=True)) as conn:
            conn.row_factory = sqlite3.Row
            row = show_decision(conn, decision_id)
        return dict(row) if row else None

    return wait_until(stored, message=f"decision {decision_id} in the audit store")


def first_message(stack: Stack) -> str:
    owner = stack.mint(A, user=MAILBOX_OWNER)
    listing = stack.http("GET", "/gmail/v1/users/me/messages", token=owner, purpose="essential.service")
    assert listing.status == 200, listing.body
    return str(listing.json()["messages"][0]["id"])


APP_ONLY_WITH_EMPLOYEE_ROLES = [
    ("Legal.Officer", "GET", "/gmail/v1/users/{owner}/messages/{message}", "essential.legal_obligation"),
    ("Security.Investigator", "GET", "/gmail/v1/users/{owner}/messages/{message}", "essential.service.security"),
    ("Support.Agent", "GET", f"/tenants/{A}/contacts", "essential.service.operations.support"),
    ("Sales.Rep", "GET", f"/tenants/{A}/contacts", "sales"),
    ("Security.Investigator", "GET", f"/tenants/{A}/payments", "essential.service.security"),
    ("Billing.Admin", "GET", f"/tenants/{A}/payments/pay-a-006", "essential.service.payment_processing"),
]


@pytest.mark.parametrize(("role", "method", "template", "purpose"), APP_ONLY_WITH_EMPLOYEE_ROLES)
def test_an_app_only_token_with_an_employee_role_is_refused_and_audited(
    stack: Stack, role: str, method: str, template: str, purpose: str
) -> None:
    path = template.format(owner=MAILBOX_OWNER, message=first_message(stack) if "{message}" in template else "")
    as_app = stack.mint(A, app="misassigned-app", roles=[role])
    refused = stack.http(method, path, token=as_app, purpose=purpose)
    assert refused.status == 403, refused.body
    assert refused.header("Content-Type") == "application/problem+json"
    body = refused.json()
    assert [r["policy"] for r in body["reasons"]] == ["role-kind-mismatch"]
    assert role in body["reasons"][0]["clause"] and "app-only" in body["reasons"][0]["clause"]
    assert "card_number" not in refused.body.decode()
    record = audited(stack, refused.header("X-Decision-Id") or "")
    assert (record["decision"], record["status"], record["reason"]) == ("deny", 403, "role_kind_mismatch")
    assert "role-kind-mismatch" in record["policies"]

    # The same role on a person's delegated token keeps working.
    as_person = stack.mint(A, roles=[role])
    allowed = stack.http(method, path, token=as_person, purpose=purpose)
    assert allowed.status == 200, allowed.body


def test_a_delegated_token_with_a_service_role_is_refused(stack: Stack) -> None:
    message = first_message(stack)
    path = f"/gmail/v1/users/{MAILBOX_OWNER}/messages/{message}"
    person = stack.mint(A, roles=["Service.Mail"])
    refused = stack.http("GET", path, token=person, purpose="essential.service")
    assert refused.status == 403
    clause = refused.json()["reasons"][0]["clause"]
    assert "Service.Mail" in clause and "delegated" in clause
    service = stack.mint(A, app="mail-backend", roles=["Service.Mail"])
    assert stack.http("GET", path, token=service, purpose="essential.service").status == 200
