"""Path normalisation tricks against the route map, in front of the real reference services.

A Contoso support agent (who may read Contoso's contacts) tries to reach Fabrikam's data, or an
upstream path no route maps (the upstream's own ``/healthz``), by every spelling the route matcher
and the upstream's router could read differently. For each: nothing of Fabrikam's reaches the
client, the upstream never receives a request for Fabrikam or for an unmapped path, and the
decision is in the audit store.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gateway.demo.fixtures import load_fixtures
from gateway.demo.tenants import CONTOSO_TENANT as A
from gateway.demo.tenants import FABRIKAM_TENANT as B
from tests.hostile.support import SUPPORT, Counting, Ledger, RawReply, exchange, gateway, stored_decision_ids
from tests.support.idp import DevIdP
from tests.support.servers import ThreadedServer
from tests.support.stack import Stack

A_UPPER, B_UPPER = A.upper(), B.upper()
B_ENCODED = "".join(f"%{ord(c):02x}" if c.isalnum() else c for c in B)
OTHER_USER = "0c9f0a54-2f0e-4e0b-a5d6-3f1c2b7e9a10"
# What only Fabrikam's data contains: its tenant id, name and its contacts' e-mail addresses (record
# ids are left out: an upstream 404 names the id that was asked for).
_EMAILS = {tid: {c["email"] for c in fixtures.contacts} for tid, fixtures in load_fixtures().items()}
FABRIKAM_MARKERS = (B.encode(), b"fabrikam", b"Fabrikam", *(e.encode() for e in sorted(_EMAILS[B] - _EMAILS[A])))

# Spellings that must be refused outright (never matched to any route).
REFUSED = [
    f"/tenants/{A}/../{B}/contacts/ct-b-001",
    f"/tenants/{A}/contacts/../../{B}/contacts/ct-b-001",
    f"/tenants/{A}/%2e%2e/{B}/contacts/ct-b-001",
    f"/tenants/{A}/%2E%2E/{B}/contacts/ct-b-001",
    f"/tenants/{A}/.%2e/{B}/contacts/ct-b-001",
    f"/tenants/{A}/%2e./{B}/contacts/ct-b-001",
    f"/tenants/{A}/./../{B}/contacts/ct-b-001",
    f"/tenants/{A}%2f..%2f{B}/contacts/ct-b-001",
    f"/tenants/{A}%2F..%2F{B}/contacts/ct-b-001",
    f"/tenants/{A}/contacts/..%2f..%2f{B}%2fcontacts%2fct-b-001",
    f"/tenants/{A}/contacts/%252e%252e/%252e%252e/{B}/contacts/ct-b-001",
    f"/tenants/{A}/contacts/%c0%ae%c0%ae/%c0%ae%c0%ae/{B}/contacts/ct-b-001",
    f"/tenants/{A}/contacts/..%c0%af..%c0%af{B}/contacts/ct-b-001",
    f"/tenants/{A}/contacts/..%5c..%5c{B}/contacts/ct-b-001",
    f"/tenants/{A}/contacts/ct-a-001%00/../../../{B}/contacts/ct-b-001",
    f"//tenants/{B}/contacts/ct-b-001",
    f"/tenants//{B}/contacts/ct-b-001",
    f"/tenants/{B}//contacts/ct-b-001",
    f"/tenants/{B};tid={A}/contacts/ct-b-001",
    f"/tenants/{A};/../{B}/contacts/ct-b-001",
    f"/tenants/{A}/..;/{B}/contacts/ct-b-001",
    f"/tenants/{B}/contacts/ct-b-001;.json",
    f"/tenants/{B}/contacts/ct-b-001/",
    f"/tenants/{B}/contacts/",
    f"/TENANTS/{B}/contacts/ct-b-001",
    f"/Tenants/{B}/Contacts/ct-b-001",
    f"/tenants/{B_UPPER}/contacts/ct-b-001",
    f"/tenants/{A_UPPER}/contacts/ct-a-001",
    f"/tenants/{B}/c%CE%BFntacts/ct-b-001",  # Greek omicron
    f"/tenants/{B}/contacts%EF%BC%8Fct-b-001",  # fullwidth solidus
    f"/tenants/{A}%E2%80%A5/{B}/contacts/ct-b-001",  # two-dot leader
    f"/tenants/{A}/contacts/%E2%80%8B/../../{B}/contacts",  # zero-width space
    f"/tenants/{A}/contacts/ct-a-001%2f..%2f..%2f..%2f{B}%2fcontacts",
    f"/tenants/{A}/contacts/../../../healthz",
    f"/tenants/{A}/contacts/%2e%2e/%2e%2e/%2e%2e/healthz",
    "/healthz/",
    "//healthz",
    "/healthz;x",
    "/healthz%2f",
    "/./healthz",
    "/gmail/v1/users/me%2F..%2F..%2F..%2Ftenants%2F" + B + "/messages",
    "/gmail/v1/users/me/../" + OTHER_USER + "/messages",
    "/gmail/v1/users/ME/messages",
    "/gmail/v1/users/Me/messages",
    "/gmail/v1/users/" + OTHER_USER.upper() + "/messages",
    "/gmail/v1/users/me/messages/..%2f..%2f" + OTHER_USER + "%2fmessages",
    "/Gmail/v1/users/me/messages",
    "/gmail/v1/users/me/messages/",
    "/gmail/v1//users/me/messages",
]

# Spellings the upstream reads as another tenant's resource: matched as that resource, so policy
# refuses them exactly as it refuses the plain spelling.
CROSS_TENANT = [
    f"/tenants/{B}/contacts/ct-b-001",
    f"/tenants/{B}/contacts",
    f"/tenants/{B_ENCODED}/contacts/ct-b-001",
    f"/tenants/{B}/contacts/%63t-b-001",
    f"/tenants/{B}/contacts/ct-b-001?tid={A}",
    f"/tenants/{B}/contacts/ct-b-001#/tenants/{A}/contacts",
    f"/tenants/{B}/payments/pay-b-001",
    f"/tenants/{B}/calls/call-b-001/transcript",
]

# Spellings that look hostile but name the caller's own data: served, and only Contoso's.
OWN = [
    f"/tenants/{A}/contacts/ct-a-001?/../../{B}/contacts",
    f"/tenants/{A}/contacts/ct-a-001#/../../{B}/contacts/ct-b-001",
    f"/tenants/{A}/contacts/%63t-a-001",
    f"/tenants/{A}/contacts/ct-b-001",  # Fabrikam's record id under Contoso: the upstream has none (404)
]


@pytest.fixture(scope="module")
def stack(
    idp: DevIdP, reference: tuple[ThreadedServer, Counting], ledger: Ledger, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    audit = tmp_path_factory.mktemp("audit") / "audit.sqlite"
    with gateway(idp, reference[0].url, audit) as running:
        yield running
    missing = ledger.reconcile(audit)
    assert not missing, f"decisions answered but not in the audit store: {sorted(missing)[:5]}"


@pytest.fixture(scope="module")
def agent(stack: Stack) -> str:
    return stack.mint(A, roles=["Support.Agent"])


@pytest.fixture(scope="module")
def end_user(stack: Stack) -> str:
    return stack.mint(A)


def get(stack: Stack, ledger: Ledger, upstream: Counting, target: str, token: str,
        purpose: str = SUPPORT) -> tuple[RawReply, list[str]]:  # fmt: skip
    mark = upstream.mark()
    data = (f"GET {target} HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer {token}\r\nX-Purpose: {purpose}\r\n"
            "Connection: close\r\n\r\n").encode()  # fmt: skip
    replies = ledger.saw_raw(stack.audit_path, exchange(stack.port, data))
    reached = [s.path for s in upstream.proxied_since(mark)]
    assert replies, f"{target}: no answer"
    reply = replies[0]
    assert reply.header("X-Decision-Id"), f"{target}: no decision id"
    for marker in FABRIKAM_MARKERS:
        if marker in reply.body:
            ledger.wrong_allow(f"{target}: Fabrikam data in the answer")
            raise AssertionError(f"{target}: the answer carries Fabrikam data ({marker!r})")
    for path in reached:
        if B in path or "healthz" in path or not (path.startswith(f"/tenants/{A}/") or path.startswith("/gmail/")):
            ledger.wrong_allow(f"{target}: upstream received {path}")
            raise AssertionError(f"{target}: the upstream received {path}")
    return reply, reached


def test_the_controls(stack: Stack, ledger: Ledger, reference: tuple[ThreadedServer, Counting], agent: str) -> None:
    """Plain spellings decide as expected, so the tricks below are measured against real outcomes."""
    ledger.tried("path trick", 2)
    reply, reached = get(stack, ledger, reference[1], f"/tenants/{A}/contacts/ct-a-001", agent)
    assert reply.status == 200 and reached == [f"/tenants/{A}/contacts/ct-a-001"]
    assert reply.json()["id"] == "ct-a-001"
    reply, reached = get(stack, ledger, reference[1], f"/tenants/{B}/contacts/ct-b-001", agent)
    assert reply.status == 403 and reached == []


@pytest.mark.parametrize("target", REFUSED)
def test_ambiguous_spellings_are_refused(stack: Stack, ledger: Ledger, reference: tuple[ThreadedServer, Counting],
                                         agent: str, target: str) -> None:  # fmt: skip
    ledger.tried("path trick")
    reply, reached = get(stack, ledger, reference[1], target, agent)
    assert reached == [], target
    assert reply.status in (400, 403), (target, reply.status)
    if reply.status == 403:
        assert reply.json()["reasons"][0]["policy"] == "default-deny"


@pytest.mark.parametrize("target", CROSS_TENANT)
def test_other_tenants_resources_are_refused_however_spelled(
    stack: Stack, ledger: Ledger, reference: tuple[ThreadedServer, Counting], agent: str, target: str
) -> None:
    ledger.tried("path trick")
    reply, reached = get(stack, ledger, reference[1], target, agent)
    assert reached == [], target
    assert reply.status == 403, (target, reply.status)


@pytest.mark.parametrize("target", OWN)
def test_own_data_behind_odd_spellings_is_served_and_only_it(
    stack: Stack, ledger: Ledger, reference: tuple[ThreadedServer, Counting], agent: str, target: str
) -> None:
    ledger.tried("path trick")
    reply, reached = get(stack, ledger, reference[1], target, agent)
    assert reply.status in (200, 404), (target, reply.status)
    assert len(reached) == 1 and reached[0].startswith(f"/tenants/{A}/contacts/")


def test_mailbox_owner_spellings(stack: Stack, ledger: Ledger, reference: tuple[ThreadedServer, Counting],
                                 end_user: str) -> None:  # fmt: skip
    """An end user reads their own mailbox as ``me``; no spelling of another user's id gets through."""
    ledger.tried("path trick", 4)
    reply, reached = get(stack, ledger, reference[1], "/gmail/v1/users/me/messages", end_user, "essential.service")
    assert reply.status == 200 and reached == ["/gmail/v1/users/me/messages"]
    encoded = "".join(f"%{ord(c):02X}" if c.isalnum() else c for c in OTHER_USER)
    for target in (f"/gmail/v1/users/{OTHER_USER}/messages", f"/gmail/v1/users/{encoded}/messages",
                   f"/gmail/v1/users/me;{OTHER_USER}/messages"):  # fmt: skip
        reply, reached = get(stack, ledger, reference[1], target, end_user, "essential.service")
        assert reached == [] and reply.status in (400, 403), (target, reply.status)


def test_every_decision_of_the_module_so_far_is_stored(stack: Stack, ledger: Ledger,
                                                        reference: tuple[ThreadedServer, Counting],
                                                        agent: str) -> None:  # fmt: skip
    """A spot check inside the run (the module's fixture checks all of them after the gateway stops)."""
    ledger.tried("path trick")
    reply, _ = get(stack, ledger, reference[1], f"/tenants/{A}/%2e%2e/{B}/contacts", agent)
    from tests.support.poll import wait_until

    decision_id = reply.header("X-Decision-Id")
    wait_until(
        lambda: decision_id in stored_decision_ids(stack.audit_path), timeout=5,
        message=f"decision {decision_id} in the audit store",
    )
