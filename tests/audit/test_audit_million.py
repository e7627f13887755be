"""Queries on a store of one million generated records, each answer checked by an independent query.

One test (so that ``pytest -n`` never builds the store twice). The reference answers use the JSON
columns of ``decisions`` with the term table and its indexes bypassed (``json_each``, ``+column``),
so a wrong index path or term row would show as a difference. Timings: load/bench/test_bench_audit.py.
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import pytest

from gateway.audit.maintenance import verify
from gateway.audit.query import AuditFilter, count_decisions, query_decisions, rfc3339
from gateway.audit.schema import connect_reader
from gateway.audit.synthetic import generate_store

pytestmark = pytest.mark.slow

DAY_US = 86_400_000_000


def ids(rows: list[sqlite3.Row]) -> list[str]:
    return [row[0] for row in rows]


def test_million_record_store(tmp_path: Path) -> None:
    path = tmp_path / "audit.sqlite"
    big = generate_store(str(path), 1_000_000, seed=5)
    try:
        with contextlib.closing(connect_reader(str(path))) as conn:
            assert conn.execute("SELECT count(*) FROM decisions").fetchone()[0] == 1_000_000

            # one principal's history (newest first)
            principal = big.principals[17]
            got = [r["decision_id"] for r in query_decisions(conn, AuditFilter(principal=principal, limit=500))]
            reference = ids(conn.execute(
                "SELECT decision_id FROM decisions WHERE +principal_id = ? "
                "ORDER BY time_us DESC, decision_id DESC LIMIT 500", (principal,)).fetchall())
            assert got == reference and len(got) > 100

            # denials per category per day, over everything
            counted = count_decisions(conn, AuditFilter(decision="deny"), "category", "day")
            reference_counts = {
                (category, day): n
                for category, day, n in conn.execute(
                    "SELECT j.value, date(d.time_us / 1000000, 'unixepoch'), count(*) "
                    "FROM decisions d, json_each(d.categories) j WHERE +d.decision = 'deny' GROUP BY 1, 2")
            }
            assert {(r["category"], r["day"]): r["count"] for r in counted} == reference_counts
            assert sum(reference_counts.values()) > 200_000

            # the last week's denials touching user.contact (or below), newest first
            since = big.last_time_us - 7 * DAY_US
            flt = AuditFilter(category="user.contact", decision="deny", since_us=since, limit=200)
            got = [r["decision_id"] for r in query_decisions(conn, flt)]
            reference = ids(conn.execute(
                "SELECT decision_id FROM decisions d WHERE +d.decision = 'deny' AND +d.time_us >= ? AND EXISTS "
                "(SELECT 1 FROM json_each(d.categories) j WHERE j.value LIKE 'user.contact.%') "
                "ORDER BY time_us DESC, decision_id DESC LIMIT 200", (since,)).fetchall())
            assert got == reference and len(got) == 200

            # a rare combination: one policy, one purpose subtree, one tenant
            flt = AuditFilter(policy="policy-legal-read", purpose="essential.service", limit=50)
            got = [r["decision_id"] for r in query_decisions(conn, flt)]
            reference = ids(conn.execute(
                "SELECT decision_id FROM decisions WHERE +policies = '[\"policy-legal-read\"]' "
                "AND (purpose = 'essential.service' OR purpose LIKE 'essential.service.%') "
                "ORDER BY time_us DESC, decision_id DESC LIMIT 50").fetchall())
            assert got == reference and len(got) == 50

            # the newest records, and a time window given with until
            until = big.first_time_us + DAY_US
            got_rows = query_decisions(conn, AuditFilter(until_us=until, limit=3))
            assert all(row["time"] < rfc3339(until) for row in got_rows) and len(got_rows) == 3

            # every gateway's sequence is complete
            report = verify(conn)
            assert report.ok and {g.gateway_id for g in report.gateways} == set(big.gateway_ids)
            assert sum(g.stored for g in report.gateways) == 1_000_000
    finally:
        for suffix in ("", "-wal", "-shm"):
            path.with_name(path.name + suffix).unlink(missing_ok=True)
