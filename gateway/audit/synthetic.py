"""Synthetic audit stores for query tests and benchmarks: millions of plausible records, fast.

The rows are made by SQLite itself (a recursive counter, integer hashing for the "random" picks,
``printf`` for ids), so no Python code runs per record; indexes are built after the load and the
term table is filled from the stored JSON columns. Each gateway id gets a
contiguous sequence, so ``verify`` finds no gap until one is made on purpose. Deterministic for a
given seed.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass

from gateway.audit.schema import DECISION_COLUMNS, TERM_CATEGORY, TERM_POLICY, TERM_PURPOSE, create_indexes, ensure_schema

TENANTS = ("7b5d2c1e-0f3a-4b6c-9d8e-1a2b3c4d5e6f", "c3e1f2a4-5b6c-4d7e-8f90-a1b2c3d4e5f6")
CATEGORIES = (
    ("user.contact.email", "user.name"),
    ("user.contact.phone_number", "user.name"),
    ("user.contact.email",),
    ("user.financial.bank_account", "user.contact.address"),
    ("user.content.private.call_recording",),
    ("user.content.private.call_transcript", "user.contact.phone_number"),
    ("user.content.private.email.body", "user.contact.email"),
    ("user.behavior.browsing_history",),
    ("system.operations",),
    ("user.survey.response", "user.contact.email"),
)
PURPOSES = (
    "essential.service",
    "essential.service.operations.support",
    "essential.service.security",
    "essential.service.payment_processing",
    "essential.legal_obligation",
    "analytics.reporting",
    "marketing.communications.email",
)
ROLES = (("Support.Agent",), ("Sales.Rep",), ("Billing.Admin",), ("Analyst",), ("Auditor",), ("Legal.Officer",), ())
POLICIES = tuple(f"policy-{name}" for name in (
    "support-read", "sales-read", "sales-export", "billing-read", "analyst-events", "auditor-metadata",
    "legal-read", "security-read", "service-mail", "service-payments", "enduser-mailbox",
))
ACTIONS = (("read", "Contact"), ("read", "Call"), ("read", "Payment"), ("export", "Contact"), ("read", "Message"))


@dataclass(frozen=True)
class SyntheticStore:
    path: str
    records: int
    first_time_us: int
    last_time_us: int
    gateway_ids: tuple[str, ...]
    principals: tuple[str, ...]


def _principal(index: int) -> str:
    return f"{index:08x}-0000-4000-8000-{index * 7919:012x}"


def _pick(values: tuple[str, ...], selector: str) -> str:
    """A CASE expression choosing ``values[selector]`` (selector already reduced modulo len)."""
    arms = " ".join(f"WHEN {i} THEN {_literal(v)}" for i, v in enumerate(values))
    return f"(CASE {selector} {arms} END)"


def _pairs(pairs: list[tuple[int, str]]) -> str:
    return ", ".join(f"({k}, {_literal(term)})" for k, term in pairs)


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def generate_store(
    path: str,
    records: int,
    *,
    seed: int = 7,
    days: int = 30,
    principals: int = 5000,
    gateways: int = 2,
    deny_percent: int = 25,
    end_time: float | None = None,
) -> SyntheticStore:
    end_us = round((time.time() if end_time is None else end_time) * 1_000_000)
    start_us = end_us - days * 86_400_000_000
    step = max(1, (end_us - start_us) // max(records, 1))
    gateway_ids = tuple(f"synthetic-{i}" for i in range(gateways))

    def h(salt: int) -> str:
        # a cheap integer hash of the record number: deterministic "random" picks per column
        return f"((((i + {seed * 1_000_003 + salt * 7_919}) * 2654435761) % 4294967291) / 13)"

    denied = f"({h(1)} % 100 < {deny_percent})"
    policies = [json.dumps([p]) for p in POLICIES]
    columns = {
        "id": "i",
        "decision_id": "printf('%08x-%04x-7%03x-%04x-%012x', t / 1000 / 65536, (t / 1000) % 65536, "
                       "(i / 4294967296) % 4096, 32768 + (i / 281474976710656) % 16384, i % 281474976710656)",
        "gateway_id": f"'synthetic-' || ((i - 1) % {gateways})",
        "seq": f"(i - 1) / {gateways} + 1",
        "time_us": "t",
        "trace_id": f"printf('%016x%016x', {h(2)}, {h(3)})",
        "span_id": f"printf('%016x', {h(4)} * 2 + 1)",
        "parent_span_id": "''",
        "method": "'GET'",
        "path": f"'/tenants/' || {_pick(TENANTS, f'{h(5)} % 2')} || '/x/' || i",
        "route": "'/tenants/{tid}/x/{id}'",
        "tenant": _pick(TENANTS, f"{h(5)} % 2"),
        "resource_tenant": _pick(TENANTS, f"{h(5)} % 2"),
        "principal_kind": f"CASE WHEN {h(6)} % {len(ROLES)} = {len(ROLES) - 1} THEN 'app' ELSE 'user' END",
        "principal_id": "printf('%08x-0000-4000-8000-%012x', p, p * 7919)",
        "client_id": "'client'",
        "roles": _pick(tuple(json.dumps(r) for r in ROLES), f"{h(6)} % {len(ROLES)}"),
        "action": _pick(tuple(a for a, _ in ACTIONS), f"{h(7)} % {len(ACTIONS)}"),
        "resource_type": _pick(tuple(r for _, r in ACTIONS), f"{h(7)} % {len(ACTIONS)}"),
        "resource_id": "CAST(i AS TEXT)",
        "categories": _pick(tuple(json.dumps(c) for c in CATEGORIES), f"{h(8)} % {len(CATEGORIES)}"),
        "purpose": _pick(PURPOSES, f"{h(9)} % {len(PURPOSES)}"),
        "recipient": "''",
        "consent_ref": "''",
        "decision": f"CASE WHEN {denied} THEN 'deny' ELSE 'allow' END",
        "reason": f"CASE WHEN {denied} THEN 'policy' ELSE 'allowed' END",
        "policies": f"CASE WHEN {denied} THEN '[\"default-deny\"]' ELSE "
                    f"{_pick(tuple(policies), f'{h(10)} % {len(POLICIES)}')} END",
        "clauses": "'[]'",
        "masked_fields": "'[]'",
        "policy_hash": "'hash'",
        "status": f"CASE WHEN {denied} THEN 403 ELSE 200 END",
        "decision_us": "40 + i % 200",
        "upstream_ms": f"CASE WHEN {denied} THEN 0.0 ELSE 1.5 END",
        "duration_us": "0",
        "extra": "'{}'",
    }
    assert tuple(columns) == DECISION_COLUMNS
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        # Bulk load: no journal, no fsync, a large page cache, in-memory sorting, indexes afterwards.
        conn.execute("PRAGMA journal_mode = OFF")
        conn.execute("PRAGMA synchronous = OFF")
        conn.execute("PRAGMA cache_size = -262144")
        conn.execute("PRAGMA temp_store = MEMORY")
        ensure_schema(conn, with_indexes=False)
        conn.execute("BEGIN")
        conn.execute(
            f"WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < :records), "
            f"r(i, t, p) AS (SELECT i, :start + (i - 1) * :step, {h(0)} % :principals FROM n) "
            f"INSERT INTO decisions ({', '.join(columns)}) SELECT {', '.join(columns.values())} FROM r",
            {"records": records, "start": start_us, "step": step, "principals": principals},
        )
        # The terms come from the same selectors, joined to small tables of (selector, term): no JSON
        # parsing, and no sort (each term's rows arrive in (time, id) order, so every insert appends
        # to the end of that term's key range, whose pages stay in the cache).
        category_terms = [(k, TERM_CATEGORY + c) for k, combo in enumerate(CATEGORIES) for c in combo]
        policy_terms = [(k, TERM_POLICY + p) for k, p in enumerate(POLICIES)]
        policy_terms.append((len(POLICIES), TERM_POLICY + "default-deny"))
        purpose_terms = [(k, TERM_PURPOSE + p) for k, p in enumerate(PURPOSES)]
        conn.execute(
            f"WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < :records), "
            f"ct(k, term) AS (VALUES {_pairs(category_terms)}), "
            f"pt(k, term) AS (VALUES {_pairs(policy_terms)}), "
            f"ut(k, term) AS (VALUES {_pairs(purpose_terms)}), "
            f"r(i, t, denied, c, p, u) AS (SELECT i, :start + (i - 1) * :step, {denied}, "
            f"  {h(8)} % {len(CATEGORIES)}, CASE WHEN {denied} THEN {len(POLICIES)} ELSE {h(10)} % {len(POLICIES)} END, "
            f"  {h(9)} % {len(PURPOSES)} FROM n) "
            "INSERT INTO decision_terms (term, time_us, ref, denied) "
            "SELECT x.term, r.t, r.i, r.denied FROM r JOIN ("
            " SELECT k, term, 0 AS kind FROM ct UNION ALL SELECT k, term, 1 FROM pt UNION ALL SELECT k, term, 2 FROM ut"
            ") AS x ON x.k = CASE x.kind WHEN 0 THEN r.c WHEN 1 THEN r.p ELSE r.u END",
            {"records": records, "start": start_us, "step": step},
        )
        conn.execute("COMMIT")
        create_indexes(conn)  # no ANALYZE: the queries must plan well without statistics, as in production
        conn.execute("PRAGMA journal_mode = WAL")
    finally:
        conn.close()
    return SyntheticStore(
        path=path,
        records=records,
        first_time_us=start_us,
        last_time_us=start_us + (records - 1) * step,
        gateway_ids=gateway_ids,
        principals=tuple(_principal(i) for i in range(principals)),
    )
