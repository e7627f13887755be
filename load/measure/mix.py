"""The request mixes: what the load sends, who sends it, and what the gateway should answer.

``realistic_mix`` is several tenants, roles and purposes, allowed and denied requests and masked
responses, in the proportions of a support-heavy workload; ``plain_request`` is one allowed GET with a
cached token, for the headline figures. Each entry states the answer the contract's reference role
model implies (``expect``); the harness checks one pass of the mix against the real gateway before
measuring and reports any difference, so the figures are known to be for the intended mix.

Weights are repetitions; the expanded list is shuffled with a fixed seed so allowed and denied requests
interleave and every run sends the same sequence.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.demo.fixtures import load_fixtures
from gateway.demo.tenants import CONTOSO_TENANT, FABRIKAM_TENANT
from load.measure.tokens import Caller, TokenBook

SUPPORT = "essential.service.operations.support"
MIX_SEED = 7


@dataclass(frozen=True)
class MixEntry:
    title: str
    method: str
    path: str
    caller: Caller | None  # None: no Authorization header
    purpose: str | None
    expect: int  # the status the gateway should answer
    masked: bool = False  # the answer should carry X-Redacted-Fields
    weight: int = 1
    headers: tuple[tuple[str, str], ...] = ()
    body: str | None = None
    expired: bool = False


@dataclass(frozen=True)
class Mix:
    name: str
    entries: tuple[MixEntry, ...]
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def total_weight(self) -> int:
        return sum(e.weight for e in self.entries)

    def expected_non_2xx_share(self) -> float:
        return sum(e.weight for e in self.entries if e.expect >= 400) / self.total_weight

    def expected_masked_share(self) -> float:
        return sum(e.weight for e in self.entries if e.masked) / self.total_weight


def _ids() -> dict[str, dict[str, str]]:
    fixtures = load_fixtures()
    out: dict[str, dict[str, str]] = {}
    for tenant, data in fixtures.items():
        # The newest records: older fixtures are past their retention on purpose, and would be refused.
        def newest(records: Any) -> str:
            return str(max(records, key=lambda r: str(r.get("created_at", "")))["id"])

        out[tenant] = {
            "contact": str(data.contacts[0]["id"]),
            "payment": newest(data.payments),
            "call": newest(data.calls),
            "survey": newest(data.surveys),
        }
    return out


def realistic_mix() -> Mix:
    a, b = CONTOSO_TENANT, FABRIKAM_TENANT
    ids = _ids()
    ia, ib = ids[a], ids[b]
    support_a = Caller(a, ("Support.Agent",), user="load-support-a")
    support_b = Caller(b, ("Support.Agent",), user="load-support-b", version=1)
    billing_a = Caller(a, ("Billing.Admin",), user="load-billing-a")
    sales_b = Caller(b, ("Sales.Rep",), user="load-sales-b")
    analyst_a = Caller(a, ("Analyst",), user="load-analyst-a", version=1)
    payments_app = Caller(a, ("Service.Payments",), app="load-payments")
    mail_app = Caller(a, ("Service.Mail",), app="load-mail-backend")
    entries = (
        MixEntry(
            "support agent reads a payment (card masked)",
            "GET",
            f"/tenants/{a}/payments/{ia['payment']}",
            support_a,
            SUPPORT,
            200,
            masked=True,
            weight=6,
        ),
        MixEntry(
            "support agent reads a contact",
            "GET",
            f"/tenants/{a}/contacts/{ia['contact']}",
            support_a,
            SUPPORT,
            200,
            weight=4,
        ),
        MixEntry(
            "support agent (v1 token) reads a payment, other tenant",
            "GET",
            f"/tenants/{b}/payments/{ib['payment']}",
            support_b,
            SUPPORT,
            200,
            masked=True,
            weight=3,
        ),
        MixEntry(
            "support agent reads call metadata",
            "GET",
            f"/tenants/{a}/calls/{ia['call']}",
            support_a,
            SUPPORT,
            200,
            weight=2,
        ),
        MixEntry(
            "billing admin reads a payment (card masked)",
            "GET",
            f"/tenants/{a}/payments/{ia['payment']}",
            billing_a,
            "essential.service.payment_processing",
            200,
            masked=True,
            weight=2,
        ),
        MixEntry(
            "payments service reads a payment (unmasked)",
            "GET",
            f"/tenants/{a}/payments/{ia['payment']}",
            payments_app,
            "essential.service.payment_processing",
            200,
            weight=2,
        ),
        MixEntry(
            "sales rep reads a contact",
            "GET",
            f"/tenants/{b}/contacts/{ib['contact']}",
            sales_b,
            "essential.service",
            200,
            weight=2,
        ),
        MixEntry(
            "analyst reads aggregated survey results",
            "GET",
            f"/tenants/{a}/surveys/{ia['survey']}/results",
            analyst_a,
            "analytics.reporting",
            200,
            weight=1,
        ),
        MixEntry(
            "mail backend lists a mailbox",
            "GET",
            "/gmail/v1/users/me/messages",
            mail_app,
            "essential.service",
            200,
            weight=2,
        ),
        MixEntry(
            "denied: support agent reads another tenant's contact",
            "GET",
            f"/tenants/{b}/contacts/{ib['contact']}",
            support_a,
            SUPPORT,
            403,
            weight=1,
        ),
        MixEntry(
            "denied: support agent declares advertising",
            "GET",
            f"/tenants/{a}/contacts/{ia['contact']}",
            support_a,
            "marketing.advertising",
            403,
            weight=1,
        ),
        MixEntry(
            "denied: analyst reads per-respondent answers",
            "GET",
            f"/tenants/{a}/surveys/{ia['survey']}/responses",
            analyst_a,
            "analytics.reporting",
            403,
            weight=1,
        ),
        MixEntry(
            "denied: mail backend reads Gmail for advertising",
            "GET",
            "/gmail/v1/users/me/messages",
            mail_app,
            "marketing.advertising",
            403,
            weight=1,
        ),
        MixEntry("refused: no token", "GET", f"/tenants/{a}/contacts/{ia['contact']}", None, SUPPORT, 401),
        MixEntry(
            "refused: expired token",
            "GET",
            f"/tenants/{a}/contacts/{ia['contact']}",
            support_a,
            SUPPORT,
            401,
            expired=True,
        ),
        MixEntry(
            "refused: unknown purpose",
            "GET",
            f"/tenants/{a}/contacts/{ia['contact']}",
            support_a,
            "essential.service.made_up",
            400,
        ),
    )
    return Mix("mix", entries)


def plain_request() -> Mix:
    a = CONTOSO_TENANT
    contact = _ids()[a]["contact"]
    support_a = Caller(a, ("Support.Agent",), user="load-support-a")
    entry = MixEntry(
        "support agent reads a contact (cached token)",
        "GET",
        f"/tenants/{a}/contacts/{contact}",
        support_a,
        SUPPORT,
        200,
    )
    return Mix("plain", (entry,))


@dataclass(frozen=True)
class WireRequest:
    """One request as sent: what wrk's Lua and the pre-flight check both use."""

    entry: MixEntry
    method: str
    path: str
    headers: dict[str, str]
    body: str | None


def wire_requests(mix: Mix, book: TokenBook) -> list[WireRequest]:
    """The mix expanded by weight, shuffled with a fixed seed, tokens filled in."""
    out: list[WireRequest] = []
    for entry in mix.entries:
        headers = dict(entry.headers)
        if entry.caller is not None:
            token = book.expired_token(entry.caller) if entry.expired else book.token(entry.caller)
            headers["Authorization"] = f"Bearer {token}"
        if entry.purpose is not None:
            headers["X-Purpose"] = entry.purpose
        out.extend(WireRequest(entry, entry.method, entry.path, headers, entry.body) for _ in range(entry.weight))
    random.Random(MIX_SEED).shuffle(out)
    return out


def _lua_string(text: str) -> str:
    # JSON string escapes are valid Lua escapes for the ASCII text used here.
    return json.dumps(text)


def write_lua_requests(requests: list[WireRequest], path: Path) -> Path:
    """The Lua file mix.lua loads (``WRK_REQUESTS``)."""
    lines = ["return {"]
    for r in requests:
        headers = ", ".join(f"[{_lua_string(k)}] = {_lua_string(v)}" for k, v in r.headers.items())
        body = _lua_string(r.body) if r.body is not None else "nil"
        lines.append(
            f"  {{method = {_lua_string(r.method)}, path = {_lua_string(r.path)}, "
            f"headers = {{{headers}}}, body = {body}}},"
        )
    lines.append("}")
    path.write_text("\n".join(lines) + "\n")
    return path
