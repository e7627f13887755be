"""Synthetic audit stores for query tests and benchmarks: millions of plausible records, fast.

The rows are made by SQLite itself (a recursive counter carrying two MINSTD generators for the
"random" picks, ``printf`` for ids), so no Python code runs per record; indexes are built after the
load. Each gateway id gets a contiguous sequence, so ``verify`` finds no gap until one is made on
purpose. Deterministic for a given seed. No ANALYZE is run: queries must plan well without
statistics, as on a production store.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass

from gateway.audit.schema import (
    DECISION_COLUMNS,
    TERM_CATEGORY,
    TERM_POLICY,
    TERM_PURPOSE,
    create_indexes,
    ensure_schema,
)

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

    # Two MINSTD generators (Park-Miller, modulus 2**31 - 1) run along the recursive counter; the
    # picks take different decimal digits of their values, which are close to independent.
    pick = {
        "d": f"a % 100 < {deny_percent}",
        "ca": f"(a / 100) % {len(CATEGORIES)}",
        "pu": f"(a / 1000) % {len(PURPOSES)}",
        "po": f"(a / 10000) % {len(POLICIES)}",
        "tn": f"(a / 1000000) % {len(TENANTS)}",
        "p": f"b % {principals}",
        "ro": f"(b / 10000) % {len(ROLES)}",
        "ac": f"(b / 100000) % {len(ACTIONS)}",
        "x1": "a", "x2": "b", "x3": "(a * 7 + b) % 2147483647",
    }
    policies = [json.dumps([p]) for p in POLICIES]
    columns = {
        "id": "i",
        "decision_id": "printf('%08x-%04x-7%03x-%04x-%012x', t / 1000 / 65536, (t / 1000) % 65536, "
                       "(i / 4294967296) % 4096, 32768 + (i / 281474976710656) % 16384, i % 281474976710656)",
        "gateway_id": f"'synthetic-' || ((i - 1) % {gateways})",
        "seq": f"(i - 1) / {gateways} + 1",
        "time_us": "t",
        "trace_id": "printf('%016x%016x', x1, x2)",
        "span_id": "printf('%016x', x3 * 2 + 1)",
        "parent_span_id": "''",
        "method": "'GET'",
        "path": f"'/tenants/' || {_pick(TENANTS, 'tn')} || '/x/' || i",
        "route": "'/tenants/{tid}/x/{id}'",
        "tenant": _pick(TENANTS, "tn"),
        "resource_tenant": _pick(TENANTS, "tn"),
        "principal_kind": f"CASE WHEN ro = {len(ROLES) - 1} THEN 'app' ELSE 'user' END",
        "principal_id": "printf('%08x-0000-4000-8000-%012x', p, p * 7919)",
        "client_id": "'client'",
        "roles": _pick(tuple(json.dumps(r) for r in ROLES), "ro"),
        "action": _pick(tuple(a for a, _ in ACTIONS), "ac"),
        "resource_type": _pick(tuple(r for _, r in ACTIONS), "ac"),
        "resource_id": "CAST(i AS TEXT)",
        "categories": _pick(tuple(json.dumps(c) for c in CATEGORIES), "ca"),
        "purpose": _pick(PURPOSES, "pu"),
        "recipient": "''",
        "consent_ref": "''",
        "decision": "CASE WHEN d THEN 'deny' ELSE 'allow' END",
        "reason": "CASE WHEN d THEN 'policy' ELSE 'allowed' END",
        "policies": f"CASE WHEN d THEN '[\"default-deny\"]' ELSE {_pick(tuple(policies), 'po')} END",
        "clauses": "'[]'",
        "masked_fields": "'[]'",
        "policy_hash": "'hash'",
        "status": "CASE WHEN d THEN 403 ELSE 200 END",
        "decision_us": "40 + i % 200",
        "upstream_ms": "CASE WHEN d THEN 0.0 ELSE 1.5 END",
        "duration_us": "0",
        "extra": "'{}'",
        "inputs": "''",
        "shadow_decision": "''",
        "shadow_policies": "'[]'",
    }
    assert tuple(columns) == DECISION_COLUMNS
    # one term column per slot: first category, second category (or NULL), policy, purpose
    first = tuple(TERM_CATEGORY + combo[0] for combo in CATEGORIES)
    second = tuple(TERM_CATEGORY + combo[1] if len(combo) > 1 else "" for combo in CATEGORIES)
    term = (
        f"CASE s WHEN 0 THEN {_pick(first, 'ca')} WHEN 1 THEN {_pick(second, 'ca')} "
        f"WHEN 2 THEN CASE WHEN d THEN '{TERM_POLICY}default-deny' "
        f"ELSE {_pick(tuple(TERM_POLICY + p for p in POLICIES), 'po')} END "
        f"ELSE {_pick(tuple(TERM_PURPOSE + p for p in PURPOSES), 'pu')} END"
    )
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        # Bulk load: no journal, no fsync, a large page cache, in-memory temporary data, indexes afterwards.
        conn.execute("PRAGMA journal_mode = OFF")
        conn.execute("PRAGMA synchronous = OFF")
        conn.execute("PRAGMA cache_size = -262144")
        conn.execute("PRAGMA temp_store = MEMORY")
        ensure_schema(conn, with_indexes=False)
        conn.execute("BEGIN")
        conn.execute(
            f"CREATE TEMP TABLE picks AS WITH RECURSIVE n(i, a, b) AS "
            f"(SELECT 1, :seed_a, :seed_b UNION ALL "
            f"SELECT i + 1, (a * 48271) % 2147483647, (b * 69621) % 2147483647 FROM n WHERE i < :records) "
            f"SELECT i, :start + (i - 1) * :step AS t, {', '.join(f'{v} AS {k}' for k, v in pick.items())} FROM n",
            {"records": records, "start": start_us, "step": step,
             "seed_a": 1 + (seed * 7919) % 2147483646, "seed_b": 1 + (seed * 104729 + 17) % 2147483646},
        )
        conn.execute(
            f"INSERT INTO decisions ({', '.join(columns)}) SELECT {', '.join(columns.values())} FROM picks"
        )
        # Each term's rows arrive in (time, id) order, so every insert appends to the end of that
        # term's key range, whose pages stay in the cache: cheaper than sorting.
        conn.execute(
            "INSERT INTO decision_terms (term, time_us, ref, denied) "
            f"SELECT term, t, i, d FROM (SELECT picks.i, picks.t, picks.d, {term} AS term "
            "FROM picks CROSS JOIN (SELECT 0 AS s UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3) "
            ") WHERE term != ''"
        )
        conn.execute("DROP TABLE picks")
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
