"""Broken neighbours: the identity provider, the upstream, the facts service, the policy files.

For each fault: what the client sees, what ``/readyz`` says, and that every decision the client was
told about (its ``X-Decision-Id``) is in the audit store. The audit store's own faults and the OTLP
collector are in test_audit_faults.py; a killed worker is in test_workers.py.
"""

from __future__ import annotations

import http.client
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.demo.tenants import CONTOSO_TENANT as A
from gateway.demo.tenants import FABRIKAM_TENANT as B
from tests.hostile.rawupstream import raw_upstream
from tests.hostile.support import (
    SUPPORT,
    Counting,
    Ledger,
    call,
    gateway,
    stored_record,
)
from tests.identity.faults import FaultyAuthority
from tests.support.idp import DevIdP, running_dev_idp
from tests.support.poll import wait_until
from tests.support.servers import ThreadedServer, free_port
from tests.support.stack import Stack

PROJECT_ROOT = Path(__file__).resolve().parents[2]  # the checkout

OWN = f"/tenants/{A}/contacts/ct-a-001"
FAST_KEYS: dict[str, Any] = {"retry_min_seconds": 0.05, "retry_max_seconds": 0.3, "http_timeout_seconds": 2.0}


def readiness(stack: Stack) -> dict[str, Any]:
    reply = stack.http("GET", "/readyz", timeout=5)
    document: dict[str, Any] = reply.json()
    document["http_status"] = reply.status
    return document


def committed(stack: Stack, decision_id: str | None, timeout: float = 5.0) -> dict[str, Any]:
    assert decision_id, "no decision id"
    found: list[dict[str, Any]] = []

    def check() -> bool:
        record = stored_record(stack.audit_path, decision_id)
        if record is not None:
            found.append(record)
        return record is not None

    wait_until(check, timeout=timeout, message=f"decision {decision_id} in the audit store")
    return found[-1]


def settle(stack: Stack, ledger: Ledger) -> None:
    """After the gateway stopped: every decision the clients saw is stored."""
    missing = ledger.reconcile(stack.audit_path)
    assert not missing, f"decisions answered but not in the audit store: {sorted(missing)[:5]}"


@pytest.fixture
def authority(tmp_path: Path) -> Iterator[tuple[DevIdP, FaultyAuthority]]:
    faults = FaultyAuthority(None)

    def wrap(app: Any) -> Any:
        faults.app = app
        return faults

    with running_dev_idp(tmp_path / "dev", wrap=wrap) as idp:
        yield idp, faults


# -- the identity provider -------------------------------------------------------------------------------


def test_identity_provider_down_at_start(tmp_path: Path, reference: tuple[ThreadedServer, Counting],
                                         ledger: Ledger) -> None:  # fmt: skip
    ledger.fault("identity provider down at start")
    with running_dev_idp(tmp_path / "dev") as idp:
        idp.stop()
        with gateway(idp, reference[0].url, tmp_path / "audit.sqlite", wait_ready=False,
                     identity_overrides=FAST_KEYS) as stack:  # fmt: skip
            token = stack.mint(A, roles=["Support.Agent"])  # signed offline with the IdP's key
            time.sleep(0.3)
            ready = readiness(stack)
            assert ready["http_status"] == 503 and ready["checks"]["keys"] is False
            reply = call(stack, ledger, "GET", OWN, token=token, purpose=SUPPORT)
            assert reply is not None and reply.status == 401
            assert 'error="invalid_token"' in (reply.header("WWW-Authenticate") or "")
            assert reply.json()["reason"] == "keys_unavailable"
            assert committed(stack, reply.header("X-Decision-Id"))["reason"] == "keys_unavailable"
            idp.start()
            wait_until(
                lambda: readiness(stack)["http_status"] == 200, timeout=20,
                message="the gateway ready once the identity provider is up",
            )
            reply = call(stack, ledger, "GET", OWN, token=token, purpose=SUPPORT)
            assert reply is not None and reply.status == 200
        settle(stack, ledger)


def test_identity_provider_down_during_service(tmp_path: Path, reference: tuple[ThreadedServer, Counting],
                                               ledger: Ledger) -> None:  # fmt: skip
    """Keys already loaded keep working; a key published while the IdP is unreachable cannot be
    fetched, so its tokens are refused (fail closed) until the IdP is back."""
    ledger.fault("identity provider down during service")
    with running_dev_idp(tmp_path / "dev") as idp, gateway(
        idp, reference[0].url, tmp_path / "audit.sqlite", identity_overrides=FAST_KEYS,
        GATEWAY_IDENTITY_UNKNOWN_KID_COOLDOWN_SECONDS="0.2",
    ) as stack:  # fmt: skip
        old = stack.mint(A, roles=["Support.Agent"])
        assert call(stack, ledger, "GET", OWN, token=old, purpose=SUPPORT).status == 200  # type: ignore[union-attr]
        idp.stop()
        idp.rotate()
        new = stack.mint(A, roles=["Support.Agent"])  # signed with the key the gateway cannot fetch yet
        for _ in range(3):
            reply = call(stack, ledger, "GET", OWN, token=old, purpose=SUPPORT)
            assert reply is not None and reply.status == 200
        reply = call(stack, ledger, "GET", OWN, token=new, purpose=SUPPORT)
        assert reply is not None and reply.status == 401 and reply.json()["reason"] == "unknown_kid"
        assert committed(stack, reply.header("X-Decision-Id"))["status"] == 401
        ready = readiness(stack)
        assert ready["http_status"] == 200 and ready["checks"]["keys"] is True  # the last good keys hold
        idp.start()

        def accepted() -> bool:
            answer = call(stack, ledger, "GET", OWN, token=new, purpose=SUPPORT)
            return answer is not None and answer.status == 200

        wait_until(accepted, timeout=20, interval=0.3, message="the token accepted")
    settle(stack, ledger)


@pytest.mark.parametrize(
    ("fault", "what"),
    [(("garbage",), "key set is not JSON"), (("huge", 2 * 1024 * 1024), "key set of 2 MiB"),
     (("redirect", "http://127.0.0.1:9/keys"), "key set redirects"), (("status", 500), "key set answers 500"),
     (("delay", 1.5), "key set slower than the fetch timeout")],
)  # fmt: skip
def test_a_broken_key_endpoint(fault: tuple[Any, ...], what: str, authority: tuple[DevIdP, FaultyAuthority],
                               reference: tuple[ThreadedServer, Counting], tmp_path: Path,
                               ledger: Ledger) -> None:  # fmt: skip
    """At start: not ready, every token refused with its reason. Repaired: ready. Broken again while
    serving: the last good keys stay in force, readiness holds."""
    ledger.fault(f"JWKS: {what}")
    idp, faults = authority
    faults.faults["keys"] = fault
    with gateway(idp, reference[0].url, tmp_path / "audit.sqlite", wait_ready=False,
                 identity_overrides={**FAST_KEYS, "http_timeout_seconds": 0.5},
                 GATEWAY_IDENTITY_UNKNOWN_KID_COOLDOWN_SECONDS="0.2") as stack:  # fmt: skip
        token = stack.mint(A, roles=["Support.Agent"])
        wait_until(lambda: faults.requests["keys"] >= 2, timeout=10, message="the key sets asked for twice")
        ready = readiness(stack)
        assert ready["http_status"] == 503 and ready["checks"] == {"keys": False, "policies": True, "audit": True}
        reply = call(stack, ledger, "GET", OWN, token=token, purpose=SUPPORT)
        assert reply is not None and reply.status == 401 and reply.json()["reason"] == "keys_unavailable"
        assert 'error="invalid_token"' in (reply.header("WWW-Authenticate") or "")
        del faults.faults["keys"]
        wait_until(lambda: readiness(stack)["http_status"] == 200, timeout=20, message="the gateway ready")
        assert call(stack, ledger, "GET", OWN, token=token, purpose=SUPPORT).status == 200  # type: ignore[union-attr]
        faults.faults["keys"] = fault
        faults.faults["metadata"] = fault if fault[0] != "huge" else ("garbage",)
        before = faults.requests["keys"] + faults.requests["metadata"]
        # a kid the gateway does not know forces a refresh, which now meets the broken endpoint
        forged = stack.mint(A, roles=["Support.Agent"], extra_headers={"kid": "not-published"})
        reply = call(stack, ledger, "GET", OWN, token=forged, purpose=SUPPORT)
        assert reply is not None and reply.status == 401
        wait_until(
            lambda: faults.requests["keys"] + faults.requests["metadata"] > before, timeout=10, message="a key refresh"
        )
        reply = call(stack, ledger, "GET", OWN, token=token, purpose=SUPPORT)
        assert reply is not None and reply.status == 200
        assert readiness(stack)["http_status"] == 200
    settle(stack, ledger)


# -- the upstream ----------------------------------------------------------------------------------------


@pytest.fixture
def broken_upstream_stack(idp: DevIdP, reference: tuple[ThreadedServer, Counting], tmp_path: Path,
                          ledger: Ledger) -> Iterator[tuple[Stack, Any]]:  # fmt: skip
    with raw_upstream(limit=10) as upstream, gateway(
        idp, upstream.url, tmp_path / "audit.sqlite", resolver_url=reference[0].url,
        GATEWAY_UPSTREAM_READ_TIMEOUT_SECONDS="1", GATEWAY_UPSTREAM_CONNECT_TIMEOUT_SECONDS="1",
    ) as stack:  # fmt: skip
        yield stack, upstream
    settle(stack, ledger)


BEFORE_HEADERS = {
    "reset-early": (502, "upstream_error"), "close-early": (502, "upstream_error"),
    "garbage": (502, "upstream_error"), "bad-length": (502, "upstream_error"),
    "huge-head": (502, "upstream_error"), "hang": (504, "upstream_timeout"),
}  # fmt: skip


@pytest.mark.parametrize("route", ["streamed", "masked"])
def test_an_upstream_failing_before_its_headers_is_502_or_504(
    broken_upstream_stack: tuple[Stack, Any], ledger: Ledger, route: str
) -> None:
    stack, upstream = broken_upstream_stack
    if route == "streamed":  # the mail service reads messages: nothing to mask, the body streams
        token, purpose = stack.mint(A, app="mail-backend", roles=["Service.Mail"]), "essential.service"
        base = "/gmail/v1/users/me/messages/"
    else:  # a payment for billing: the card number is masked, so the body is buffered first
        token, purpose = stack.mint(A, roles=["Billing.Admin"]), "essential.service.payment_processing"
        base = f"/tenants/{A}/payments/"
    for mode, (status, reason) in BEFORE_HEADERS.items():
        ledger.fault(f"upstream: {mode} ({route})")
        reply = call(stack, ledger, "GET", base + mode, token=token, purpose=purpose, timeout=15)
        assert reply is not None and reply.status == status, (mode, reply and reply.body)
        assert reply.header("Content-Type") == "application/problem+json"
        record = committed(stack, reply.header("X-Decision-Id"))
        assert (record["status"], record["reason"], record["decision"]) == (status, reason, "allow")
    assert upstream.requests["hang"] >= 1
    reply = call(stack, ledger, "GET", base + "fine", token=token, purpose=purpose)
    assert reply is not None and reply.status == 200  # the connection pool is not poisoned
    assert readiness(stack)["http_status"] == 200


def test_an_upstream_failing_mid_body_cuts_the_streamed_response(
    broken_upstream_stack: tuple[Stack, Any], ledger: Ledger
) -> None:
    """After the status line has gone out, cutting the connection is the only honest signal left: the
    client reads fewer bytes than announced. The decision was recorded before the first byte."""
    stack, _ = broken_upstream_stack
    token = stack.mint(A, app="mail-backend", roles=["Service.Mail"])
    for mode, announced in (("reset-mid", 1_000_000), ("stall-body", 1000)):
        ledger.fault(f"upstream: {mode} (streamed)")
        conn = http.client.HTTPConnection("127.0.0.1", stack.port, timeout=15)
        conn.request("GET", f"/gmail/v1/users/me/messages/{mode}",
                     headers={"Authorization": f"Bearer {token}", "X-Purpose": "essential.service"})  # fmt: skip
        response = conn.getresponse()
        assert response.status == 200
        ledger.saw(stack.audit_path, response)
        decision_id = response.getheader("X-Decision-Id")
        try:
            body = response.read()
        except http.client.IncompleteRead as exc:
            body = exc.partial
        except (ConnectionError, TimeoutError):
            body = b""
        conn.close()
        assert len(body) < announced
        assert committed(stack, decision_id)["status"] == 200


def test_an_upstream_failing_mid_body_of_a_masked_response_is_502(
    broken_upstream_stack: tuple[Stack, Any], ledger: Ledger
) -> None:
    stack, _ = broken_upstream_stack
    token = stack.mint(A, roles=["Billing.Admin"])
    for mode in ("reset-mid", "stall-body"):
        ledger.fault(f"upstream: {mode} (masked)")
        reply = call(stack, ledger, "GET", f"/tenants/{A}/payments/{mode}", token=token,
                     purpose="essential.service.payment_processing", timeout=15)  # fmt: skip
        assert reply is not None and reply.status == 502, (mode, reply and reply.body)
        assert committed(stack, reply.header("X-Decision-Id"))["reason"] == "upstream_error"


def test_an_upstream_restart_does_not_break_the_next_requests(
    idp: DevIdP, reference: tuple[ThreadedServer, Counting], tmp_path: Path, ledger: Ledger
) -> None:
    """The gateway's keep-alive pool holds connections to the old upstream process; after it stops
    (refusing: 502) and comes back on the same port, requests succeed again at once."""
    ledger.fault("upstream refusing, then restarted")
    from tests.support.echo_upstream import echo_upstream

    port = free_port()
    upstream = ThreadedServer(echo_upstream, port=port).start()
    with gateway(idp, upstream.url, tmp_path / "audit.sqlite", resolver_url=reference[0].url) as stack:
        token = stack.mint(A, roles=["Support.Agent"])
        path = f"/tenants/{A}/contacts/echo-1"
        for _ in range(5):
            assert call(stack, ledger, "GET", path, token=token, purpose=SUPPORT).status == 200  # type: ignore[union-attr]
        upstream.stop()
        reply = call(stack, ledger, "GET", path, token=token, purpose=SUPPORT)
        assert reply is not None and reply.status == 502 and "unreachable" in reply.json()["detail"]
        assert readiness(stack)["http_status"] == 200  # the upstream is not the gateway's readiness
        upstream = ThreadedServer(echo_upstream, port=port).start()
        try:
            statuses = [call(stack, ledger, "GET", path, token=token, purpose=SUPPORT).status  # type: ignore[union-attr]
                        for _ in range(5)]  # fmt: skip
        finally:
            upstream.stop()
        assert statuses == [200] * 5
    settle(stack, ledger)


def test_the_facts_service_down_denies_with_a_fail_closed_reason(
    idp: DevIdP, echo: tuple[ThreadedServer, Counting], tmp_path: Path, ledger: Ledger
) -> None:
    ledger.fault("facts service (resolver) down")
    dead = f"http://127.0.0.1:{free_port()}"
    with gateway(idp, echo[0].url, tmp_path / "audit.sqlite", resolver_url=dead) as stack:
        mark = echo[1].mark()
        reply = call(stack, ledger, "GET", f"/tenants/{A}/contacts/echo-1",
                     token=stack.mint(A, roles=["Support.Agent"]), purpose=SUPPORT)  # fmt: skip
        assert reply is not None and reply.status == 403
        assert reply.json()["reasons"][0]["policy"] == "fail-closed"
        assert echo[1].proxied_since(mark) == []
        assert committed(stack, reply.header("X-Decision-Id"))["reason"] == "resolver_error"
    settle(stack, ledger)


# -- the policy files ------------------------------------------------------------------------------------

BREAKAGES = {
    "cedar syntax error": ("policies", "base/roles.cedar", "\npermit (principal, action, resource) when { ;\n"),
    "policy against the schema": ("policies", "base/roles.cedar",
                                  '\npermit (principal, action, resource) when { context.no_such_field == 1 };\n'),
    "schema syntax error": ("policies", "schema.cedarschema", "\nentity Broken in [;\n"),
    "route map TOML error": ("adapters", "reference.toml", "\n[[route]\nid = \n"),
    "route map with an unknown action": ("adapters", "reference.toml",
                                         '\n[[route]]\nid = "x.y"\nmethod = "GET"\npath = "/x"\naction = "teleport"\n'
                                         'resource = "Contact"\ntenant = "principal"\ncategories = ["user.name"]\n'),
}  # fmt: skip


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_a_broken_policy_reload_keeps_the_last_good_set(
    breakage: str, idp: DevIdP, reference: tuple[ThreadedServer, Counting], tmp_path: Path, ledger: Ledger
) -> None:
    ledger.fault(f"policy reload: {breakage}")
    where, name, garbage = BREAKAGES[breakage]
    policies = tmp_path / "policies"
    shutil.copytree(PROJECT_ROOT / "policies", policies)
    maps = tmp_path / "adapters"
    maps.mkdir()
    for route_map in ("reference.toml", "gmail.toml"):
        shutil.copy(PROJECT_ROOT / "gateway" / "adapters" / route_map, maps / route_map)
    with gateway(
        idp, reference[0].url, tmp_path / "audit.sqlite", GATEWAY_POLICIES_DIR=str(policies),
        GATEWAY_POLICIES_ROUTE_MAPS=f"{maps / 'reference.toml'},{maps / 'gmail.toml'}",
        GATEWAY_POLICIES_WATCH_INTERVAL_SECONDS="0.1",
    ) as stack:  # fmt: skip
        agent = stack.mint(A, roles=["Support.Agent"])
        good_hash = readiness(stack)["policy_hash"]
        target = (policies if where == "policies" else maps) / name
        original = target.read_text()
        target.write_text(original + garbage)
        wait_until(lambda: "policy_error" in readiness(stack), timeout=10, message="the broken file noticed")
        ready = readiness(stack)
        assert ready["http_status"] == 200 and ready["policy_hash"] == good_hash
        assert name in ready["policy_error"]
        allowed = call(stack, ledger, "GET", OWN, token=agent, purpose=SUPPORT)
        denied = call(stack, ledger, "GET", f"/tenants/{B}/contacts/ct-b-001", token=agent, purpose=SUPPORT)
        assert allowed is not None and allowed.status == 200
        assert denied is not None and denied.status == 403
        assert committed(stack, allowed.header("X-Decision-Id"))["policy_hash"] == good_hash
        target.write_text(original)
        wait_until(lambda: "policy_error" not in readiness(stack), timeout=10, message="the fixed file loaded")
        assert call(stack, ledger, "GET", OWN, token=agent, purpose=SUPPORT).status == 200  # type: ignore[union-attr]
    settle(stack, ledger)
