"""Synthetic audit stores for query tests and benchmarks (millions of plausible records, fast).

Rows are written straight into the schema with ``executemany`` in one transaction, indexes built
afterwards (several times faster than maintaining them row by row). Each gateway id gets a
contiguous sequence, so ``verify`` finds no gap until one is made on purpose. Deterministic for a
given seed.
"""

from __future__ import annotations

import itertools
import json
import random
import sqlite3
import time
from array import array
from dataclasses import dataclass

from gateway.audit.schema import (
    DECISION_COLUMNS,
    INSERT_TERM,
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


def generate_store(
    path: str,
    records: int,
    *,
    seed: int = 7,
    days: int = 30,
    principals: int = 5000,
    gateways: int = 2,
    deny_ratio: float = 0.25,
    end_time: float | None = None,
) -> SyntheticStore:
    rng = random.Random(seed)
    end_us = round((time.time() if end_time is None else end_time) * 1_000_000)
    start_us = end_us - days * 86_400_000_000
    step = max(1, (end_us - start_us) // max(records, 1))
    principal_ids = tuple(f"{rng.getrandbits(128):032x}" for _ in range(principals))
    principal_ids = tuple(f"{p[:8]}-{p[8:12]}-{p[12:16]}-{p[16:20]}-{p[20:]}" for p in principal_ids)
    gateway_ids = tuple(f"synthetic-{i}" for i in range(gateways))
    category_json = [json.dumps(c) for c in CATEGORIES]
    role_json = [json.dumps(r) for r in ROLES]
    policy_json = [json.dumps([p]) for p in POLICIES]
    category_terms = [[TERM_CATEGORY + c for c in cats] for cats in CATEGORIES]
    conn = sqlite3.connect(path, isolation_level=None)
    # Bulk load: no journal, no fsync, a large page cache, indexes afterwards. Terms are kept per
    # term (each list already in time order) and inserted term by term: appends to the key, no sort.
    conn.execute("PRAGMA journal_mode = OFF")
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute("PRAGMA cache_size = -262144")
    conn.execute("PRAGMA temp_store = MEMORY")
    ensure_schema(conn, with_indexes=False)
    insert = f"INSERT INTO decisions ({', '.join(DECISION_COLUMNS)}) VALUES ({', '.join('?' * len(DECISION_COLUMNS))})"
    sequences = [0] * gateways
    conn.execute("BEGIN")
    chunk: list[tuple[object, ...]] = []
    # per term: parallel arrays of time, record id and denial flag, in time order (17 bytes an entry)
    terms: dict[str, tuple[array[int], array[int], array[int]]] = {}

    def term_arrays(term: str) -> tuple[array[int], array[int], array[int]]:
        return terms.setdefault(term, (array("q"), array("q"), array("b")))

    category_arrays = [[term_arrays(t) for t in cats] for cats in category_terms]
    purpose_arrays = [term_arrays(TERM_PURPOSE + p) for p in PURPOSES]
    policy_arrays = [term_arrays(TERM_POLICY + p) for p in (*POLICIES, "default-deny")]
    randbits = rng.getrandbits
    for index in range(1, records + 1):
        time_us = start_us + (index - 1) * step
        gateway = index % gateways
        sequences[gateway] += 1
        principal = principal_ids[randbits(30) % principals]
        cat = randbits(16) % len(CATEGORIES)
        purpose_index = randbits(16) % len(PURPOSES)
        purpose = PURPOSES[purpose_index]
        role = randbits(16) % len(ROLES)
        policy = randbits(16) % len(POLICIES)
        denied = rng.random() < deny_ratio
        action, resource_type = ACTIONS[randbits(8) % len(ACTIONS)]
        tenant = TENANTS[randbits(1)]
        decision_id = _decision_id(time_us, index)
        chunk.append((
            index, decision_id, gateway_ids[gateway], sequences[gateway], time_us,
            f"{randbits(128):032x}", f"{randbits(64) | 1:016x}", "", "GET", f"/tenants/{tenant}/x/{index}",
            "/tenants/{tid}/x/{id}", tenant, tenant, "user" if role < len(ROLES) - 1 else "app", principal, "client",
            role_json[role], action, resource_type, str(index), category_json[cat], purpose, "", "",
            "deny" if denied else "allow", "policy" if denied else "allowed",
            '["default-deny"]' if denied else policy_json[policy], "[]", "[]", "hash",
            403 if denied else 200, 40 + (index % 200), 0.0 if denied else 1.5, 0, "{}",
        ))
        flag = 1 if denied else 0
        for times, refs, flags in (*category_arrays[cat], purpose_arrays[purpose_index],
                                   policy_arrays[len(POLICIES) if denied else policy]):
            times.append(time_us)
            refs.append(index)
            flags.append(flag)
        if len(chunk) >= 50_000:
            conn.executemany(insert, chunk)
            chunk.clear()
    if chunk:
        conn.executemany(insert, chunk)
    for term in sorted(terms):
        times, refs, flags = terms[term]
        conn.executemany(INSERT_TERM, zip(itertools.repeat(term), times, refs, flags))
    conn.execute("COMMIT")
    create_indexes(conn)
    conn.execute("ANALYZE")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.close()
    return SyntheticStore(path, records, start_us, start_us + (records - 1) * step, gateway_ids, principal_ids)


def _decision_id(time_us: int, index: int) -> str:
    value = ((time_us // 1000) << 80) | (0x7 << 76) | (0b10 << 62) | index
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
