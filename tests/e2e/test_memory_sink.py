"""The request path against an in-memory audit sink (``gateway.audit.sink.MemorySink``): the real
gateway, dev IdP and reference services over loopback, with no SQLite store behind ``Gateway.audit``,
so what the gateway recorded for each request is read back field by field."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.audit.sink import AuditSink, MemorySink
from gateway.demo.tenants import CONTOSO_TENANT as A
from tests.support.idp import DevIdP
from tests.support.servers import ThreadedServer
from tests.support.stack import Stack, running_gateway

SUPPORT = "essential.service.operations.support"


@pytest.fixture
def sink_stack(idp: DevIdP, reference_upstream: ThreadedServer, tmp_path: Path) -> Iterator[tuple[Stack, MemorySink]]:
    sink = MemorySink()
    with running_gateway(idp, reference_upstream.url, tmp_path / "audit.sqlite", audit=sink) as stack:
        yield stack, sink


def test_memory_sink_is_an_audit_sink() -> None:
    assert isinstance(MemorySink(), AuditSink)


def test_allowed_read_is_recorded_once_with_its_decision(sink_stack: tuple[Stack, MemorySink]) -> None:
    stack, sink = sink_stack
    token = stack.mint(A, roles=["Support.Agent"])
    reply = stack.http("GET", f"/tenants/{A}/contacts/ct-a-005", token=token, purpose=SUPPORT)
    assert reply.status == 200, reply.body
    rec = sink.by_id(reply.header("x-decision-id") or "")
    assert (rec.decision, rec.status, rec.reason) == ("allow", 200, "ok")
    assert (rec.method, rec.route, rec.action, rec.resource_type, rec.resource_id) == (
        "GET", "/tenants/{tid}/contacts/{id}", "read", "Contact", "ct-a-005"
    )
    assert rec.tenant == A and rec.principal_kind == "user" and rec.roles == ("Support.Agent",)
    assert rec.purpose == SUPPORT and "user.contact" in rec.categories and rec.policies
    assert rec.replay is not None and rec.upstream_ms > 0 and rec.duration_us > 0
    assert rec.sequence >= 1 and rec.gateway_id == "memory"
    # nothing went to the SQLite store: the sink is the only audit trail of this gateway
    assert not (stack.audit_path).exists()


def test_refusals_are_recorded_too(sink_stack: tuple[Stack, MemorySink]) -> None:
    stack, sink = sink_stack
    unauthenticated = stack.http("GET", f"/tenants/{A}/contacts/ct-a-005", purpose=SUPPORT)
    assert unauthenticated.status == 401
    rec = sink.by_id(unauthenticated.header("x-decision-id") or "")
    assert (rec.decision, rec.status, rec.reason) == ("deny", 401, "missing_token")
    token = stack.mint(A, roles=["Support.Agent"])
    wrong_purpose = stack.http("GET", f"/tenants/{A}/contacts/ct-a-005", token=token, purpose="marketing.advertising")
    assert wrong_purpose.status == 403
    refused = sink.by_id(wrong_purpose.header("x-decision-id") or "")
    assert refused.decision == "deny" and refused.status == 403 and refused.policies


def test_unwritable_sink_fails_closed_and_recovers(sink_stack: tuple[Stack, MemorySink]) -> None:
    stack, sink = sink_stack
    token = stack.mint(A, roles=["Support.Agent"])
    sink.fail("disk full")
    ready = stack.http("GET", "/readyz")
    assert ready.status == 503 and ready.json()["audit_error"] == "disk full"
    refused = stack.http("GET", f"/tenants/{A}/contacts/ct-a-005", token=token, purpose=SUPPORT)
    assert refused.status == 503
    assert [r.decision_id for r in sink.refused] == [refused.header("x-decision-id")]
    assert sink.records == []
    sink.recover()
    assert stack.http("GET", "/readyz").status == 200
    again = stack.http("GET", f"/tenants/{A}/contacts/ct-a-005", token=token, purpose=SUPPORT)
    assert again.status == 200 and sink.by_id(again.header("x-decision-id") or "").status == 200
