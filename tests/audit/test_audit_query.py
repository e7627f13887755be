"""``gateway audit query`` and ``show``: filters, relative ages, formats, reading while the gateway writes."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import io
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.audit import commands
from gateway.audit.query import (
    QUERY_FIELDS,
    AuditFilter,
    QueryError,
    count_decisions,
    parse_age,
    parse_time,
    query_decisions,
    rfc3339,
)
from gateway.audit.record import DecisionRecord
from gateway.audit.schema import connect_reader, time_to_us
from tests.support.poll import wait_until_async

from .corpus import CONTRACT_FIELDS, NOW, brute_force, filters, in_tree, random_records
from .helpers import make_record, running
from .helpers import settings as audit_settings


def cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="gateway")
    commands.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    status: int = args.func(args)
    return status


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, list[DecisionRecord]]]:
    path = tmp_path_factory.mktemp("query") / "audit.sqlite"
    records = random_records(400)

    async def fill() -> None:
        async with running(audit_settings(path, batch_size=64)) as log:
            for rec in records:
                await log.record(rec)

    asyncio.run(fill())
    yield path, records


@settings(max_examples=200, deadline=None)
@given(flt=filters)
def test_listing_equals_brute_force(store: tuple[Path, list[DecisionRecord]], flt: AuditFilter) -> None:
    path, records = store
    with contextlib.closing(connect_reader(str(path))) as conn:
        got = [row["decision_id"] for row in query_decisions(conn, flt)]
    assert got == brute_force(records, flt)


@settings(max_examples=100, deadline=None)
@given(flt=filters, by=st.sampled_from(["category", "policy", "purpose", "principal", "decision", "status"]),
       per=st.sampled_from([None, "day", "hour"]))
def test_counts_equal_brute_force(
    store: tuple[Path, list[DecisionRecord]], flt: AuditFilter, by: str, per: str | None
) -> None:
    path, records = store
    with contextlib.closing(connect_reader(str(path))) as conn:
        got = count_decisions(conn, flt, by, per)
    everything = AuditFilter(**{**flt.__dict__, "limit": 10**9})
    matching = {r.decision_id: r for r in records if r.decision_id in set(brute_force(records, everything))}
    expected: dict[tuple[Any, str], int] = {}
    for rec in matching.values():
        keys: tuple[Any, ...]
        if by == "category":
            keys = tuple(c for c in rec.categories if not flt.category or in_tree(c, flt.category))
        elif by == "policy":
            keys = tuple(p for p in rec.policies if not flt.policy or p == flt.policy)
        elif by == "purpose":
            keys = (rec.purpose,) if rec.purpose else ()
        else:
            keys = ({"principal": rec.principal_id, "decision": rec.decision, "status": rec.status}[by],)
        label = ""
        if per:
            stamp = time.gmtime(time_to_us(rec.time) // 1_000_000)
            label = time.strftime("%Y-%m-%d" if per == "day" else "%Y-%m-%dT%H:00Z", stamp)
        for key in keys:
            expected[(key, label)] = expected.get((key, label), 0) + 1
    assert {(row[by], row.get(per, "") if per else ""): row["count"] for row in got} == expected
    assert len(got) == len(expected)


def test_times_and_ages() -> None:
    assert parse_age("15m") == 900 and parse_age("2h") == 7200 and parse_age("7d") == 604800
    assert parse_time("2h", now=NOW) == time_to_us(NOW - 7200)
    assert parse_time("2027-01-15T08:00:00Z") == parse_time("2027-01-15T09:00:00+01:00")
    assert parse_time("2025-01-02T03:04:05.123456Z") == 1735787045123456
    assert rfc3339(1735787045123456) == "2025-01-02T03:04:05.123Z"
    for bad in ("yesterday", "2025-01-02T03:04:05", "-5m"):
        with pytest.raises(QueryError):
            parse_time(bad)


def test_json_output_has_the_contract_fields(
    store: tuple[Path, list[DecisionRecord]], capsys: pytest.CaptureFixture[str]
) -> None:
    path, records = store
    assert cli("audit", "query", "--path", str(path), "--format", "json", "--principal", "p-bob",
               "--decision", "deny", "--limit", "5") == 0
    rows = json.loads(capsys.readouterr().out)
    assert 0 < len(rows) <= 5
    assert set(rows[0]) >= CONTRACT_FIELDS and list(rows[0]) == list(QUERY_FIELDS)
    by_id = {r.decision_id: r for r in records}
    for row in rows:
        rec = by_id[row["decision_id"]]
        assert (row["principal"], row["decision"], row["status"]) == ("p-bob", "deny", 403)
        assert row["time"] == rfc3339(time_to_us(rec.time))
        assert row["categories"] == list(rec.categories) and row["roles"] == list(rec.roles)


def test_default_limit_is_100_and_relative_ages_work(
    store: tuple[Path, list[DecisionRecord]], capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = store
    assert cli("audit", "query", "--path", str(path), "--format", "json") == 0
    assert len(json.loads(capsys.readouterr().out)) == 100
    # the fixture's records are in 2027: "the last 15 minutes" of today holds none of them
    assert cli("audit", "query", "--path", str(path), "--format", "json", "--since", "15m",
               "--until", "1m") == 0
    assert json.loads(capsys.readouterr().out) == []


def test_csv_and_table_output(store: tuple[Path, list[DecisionRecord]], capsys: pytest.CaptureFixture[str]) -> None:
    path, _ = store
    assert cli("audit", "query", "--path", str(path), "--format", "csv", "--limit", "3") == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(rows) == 3 and set(rows[0]) >= CONTRACT_FIELDS
    assert cli("audit", "query", "--path", str(path), "--limit", "3") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["TIME", "DECISION", "STATUS"] and len(lines) == 4
    assert cli("audit", "query", "--path", str(path), "--count-by", "category", "--per", "day",
               "--decision", "deny", "--format", "csv") == 0
    header = capsys.readouterr().out.splitlines()[0]
    assert header == "category,day,count"


def test_show_prints_one_decision_in_full(
    store: tuple[Path, list[DecisionRecord]], capsys: pytest.CaptureFixture[str]
) -> None:
    path, records = store
    rec = records[7]
    assert cli("audit", "show", rec.decision_id, "--path", str(path), "--format", "json") == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["decision_id"] == rec.decision_id and shown["clauses"] == list(rec.clauses)
    assert shown["sequence"] == rec.sequence and shown["trace_id"] == rec.trace_id
    assert cli("audit", "show", rec.decision_id, "--path", str(path)) == 0
    text = capsys.readouterr().out
    assert rec.decision_id in text and rec.clauses[0] in text
    assert cli("audit", "show", "01900000-0000-7000-8000-000000000000", "--path", str(path)) == 1


def test_errors_exit_non_zero(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli("audit", "query", "--path", str(tmp_path / "none.sqlite")) == 1
    assert "no audit store" in capsys.readouterr().err
    assert cli("audit", "query", "--path", str(tmp_path / "none.sqlite"), "--since", "last week") == 2
    (tmp_path / "junk.sqlite").write_bytes(b"not a database at all, not even close" * 100)
    assert cli("audit", "query", "--path", str(tmp_path / "junk.sqlite")) == 1


def test_path_comes_from_the_configuration(
    store: tuple[Path, list[DecisionRecord]], tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path, _ = store
    config = tmp_path / "gateway.toml"
    config.write_text(f'[audit]\npath = "{path}"\n')
    assert cli("audit", "query", "--config", str(config), "--format", "json", "--limit", "1") == 0
    assert len(json.loads(capsys.readouterr().out)) == 1
    monkeypatch.setenv("GATEWAY_AUDIT_PATH", str(path))
    assert cli("audit", "query", "--format", "json", "--limit", "2") == 0
    assert len(json.loads(capsys.readouterr().out)) == 2


async def test_queries_run_while_the_gateway_writes(tmp_path: Path) -> None:
    store = tmp_path / "audit.sqlite"
    async with running(audit_settings(store, mode="async", batch_size=32)) as log:
        await log.record(make_record())
        stop = asyncio.Event()

        async def write() -> None:
            while not stop.is_set():
                for _ in range(50):
                    await log.record(make_record())
                await asyncio.sleep(0.005)

        def read_many() -> list[int]:
            # Read until the writer's commits show, bounded in count and time (no timing claim).
            seen: list[int] = []
            deadline = time.monotonic() + 10
            for _ in range(2000):
                with contextlib.closing(connect_reader(str(store))) as conn:
                    seen.append(len(query_decisions(conn, AuditFilter(limit=10**6))))
                if (len(seen) >= 20 and seen[-1] > seen[0]) or time.monotonic() > deadline:
                    break
            return seen

        writer = asyncio.create_task(write())
        try:
            counts = await asyncio.to_thread(read_many)
        finally:
            stop.set()
            await writer
        assert counts == sorted(counts) and counts[-1] > counts[0]

        # async mode: a record is queryable shortly after record() returns (bounded wait, no timing claim)
        rec = make_record(principal_id="p-late")
        await log.record(rec)

        def late() -> list[dict[str, Any]]:
            with contextlib.closing(connect_reader(str(store))) as conn:
                return query_decisions(conn, AuditFilter(principal="p-late"))

        found = await wait_until_async(late, interval=0.01, message="the late record in the store")
        assert [row["decision_id"] for row in found] == [rec.decision_id]
