"""The hash chain on a real store: any edit, deletion or reordering made directly in SQLite is found and
named; checkpoints signed before a rewrite expose it; purge keeps the chain verifiable."""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import sqlite3
import struct
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from gateway.audit import commands
from gateway.audit.chain import GENESIS, Canonical, ChainError, record_hash, table_columns
from gateway.audit.checkpoints import read_entries, store_entries
from gateway.audit.maintenance import VerifyReport, verify
from gateway.audit.schema import connect_reader
from tests.support.poll import wait_until_async

from .helpers import make_record, reader, running, settings


def cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="gateway")
    commands.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    status: int = args.func(args)
    return status


async def _store(path: Path, count: int, *, old: int = 0, gateway_id: str = "gw-test", **overrides: object) -> None:
    async with running(settings(path, gateway_id=gateway_id, **overrides)) as log:
        for index in range(count):
            when = time.time() - (10 * 86400 if index < old else 0)
            await log.record(make_record(time=when, upstream_ms=1.5 * index))


def _sql(path: Path, *statements: str) -> None:
    with contextlib.closing(sqlite3.connect(str(path), isolation_level=None)) as conn:
        for statement in statements:
            conn.execute(statement)


def _report(path: Path, checkpoints: Path | None = None) -> VerifyReport:
    entries = read_entries(checkpoints.read_text()) if checkpoints is not None else None
    with contextlib.closing(connect_reader(str(path))) as conn:
        return verify(conn, entries)


def _decision(path: Path, seq: int, gateway_id: str = "gw-test") -> str:
    with contextlib.closing(reader(path)) as conn:
        return str(conn.execute("SELECT decision_id FROM decisions WHERE gateway_id = ? AND seq = ?",
                                (gateway_id, seq)).fetchone()[0])


def _first_break(report: VerifyReport) -> tuple[int, str, str]:
    broken = [g for g in report.gateways if g.breaks]
    assert broken, "no break found"
    first = broken[0].first_break
    assert first is not None
    return first.seq, first.decision_id, first.kind


async def test_every_record_is_chained_and_a_clean_store_verifies(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "audit.sqlite"
    await _store(store, 25)
    await _store(store, 5)  # a second session continues the chain
    report = _report(store)
    assert report.ok and report.gateways[0].chained == 30
    with contextlib.closing(reader(store)) as conn:
        rows = conn.execute("SELECT seq, prev_hash, hash FROM decisions ORDER BY seq").fetchall()
    assert rows[0]["prev_hash"] == GENESIS
    assert all(rows[i]["prev_hash"] == rows[i - 1]["hash"] for i in range(1, len(rows)))
    assert cli("audit", "verify", "--path", str(store)) == 0
    assert "chain intact" in capsys.readouterr().out


async def test_the_canonical_form_is_what_the_readme_says(tmp_path: Path) -> None:
    """An independent re-implementation of the documented form gives the stored hash."""
    store = tmp_path / "audit.sqlite"
    await _store(store, 3)
    with contextlib.closing(reader(store)) as conn:
        info = conn.execute("PRAGMA table_info(decisions)").fetchall()
        row = conn.execute("SELECT * FROM decisions WHERE seq = 2").fetchone()
    names: list[str] = []
    values: list[object] = []
    for column in sorted(info, key=lambda c: c[1]):
        name, declared, default = column[1], column[2], column[4]
        value = row[name]
        if name in ("id", "prev_hash", "hash") or value is None:
            continue
        if default is not None and value == json.loads('"' + default.strip("'") + '"'):
            continue  # equal to the declared DEFAULT (all of this table's defaults are strings)
        names.append(name)
        values.append(struct.pack(">d", value).hex() if declared == "REAL" else value)
    text = json.dumps([names, values], ensure_ascii=False, separators=(",", ":"))
    expected = hashlib.sha256(bytes.fromhex(row["prev_hash"]) + text.encode()).hexdigest()
    assert expected == row["hash"]


_VALUE = st.one_of(
    st.text(alphabet=st.characters(blacklist_categories=("Cs",))),  # any text but lone surrogates
    st.text(alphabet=st.characters(max_codepoint=0x9F)),  # control characters, DEL, C1
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
)


@hypothesis_settings(max_examples=300, deadline=None)
@given(st.lists(_VALUE, min_size=1, max_size=6))
def test_the_canonical_form_agrees_with_the_standard_library_encoder(values: list[str | int]) -> None:
    """The writer's encoder (orjson) gives, byte for byte, the documented form as the standard
    library writes it, for any text and any 64-bit integer."""
    names = [f"c{i}" for i in range(len(values))]
    with contextlib.closing(sqlite3.connect(":memory:")) as conn:
        kinds = ("TEXT" if isinstance(v, str) else "INTEGER" for v in values)
        declared = ", ".join(f"{n} {kind} NOT NULL" for n, kind in zip(names, kinds, strict=True))
        conn.execute(f"CREATE TABLE decisions ({declared})")
        canonical = Canonical(names, table_columns(conn))
    form, coerced = canonical.form(values, coerce=False)
    assert coerced is None
    assert form == json.dumps([names, values], ensure_ascii=False, separators=(",", ":")).encode()


def test_a_lone_surrogate_has_no_canonical_form() -> None:
    with contextlib.closing(sqlite3.connect(":memory:")) as conn:
        conn.execute("CREATE TABLE decisions (a TEXT NOT NULL)")
        canonical = Canonical(["a"], table_columns(conn))
    with pytest.raises(ChainError):
        canonical.form(["x\ud800"], coerce=True)


@pytest.mark.parametrize("seq", [1, 7, 20])
@pytest.mark.parametrize(
    "change",
    ["status = 403", "decision = 'deny'", "purpose = 'marketing.advertising'", "upstream_ms = upstream_ms + 1",
     "time_us = time_us - 1", "extra = '{\"x\":\"1\"}'", "inputs = 'forged'"],
)
async def test_an_edited_record_is_named(tmp_path: Path, seq: int, change: str) -> None:
    store = tmp_path / "audit.sqlite"
    await _store(store, 20)
    target = _decision(store, seq)
    _sql(store, f"UPDATE decisions SET {change} WHERE seq = {seq}")
    report = _report(store)
    assert not report.ok
    assert _first_break(report) == (seq, target, "altered")
    assert cli("audit", "verify", "--path", str(store)) == 1


async def test_an_edited_hash_is_found_too(tmp_path: Path) -> None:
    store = tmp_path / "audit.sqlite"
    await _store(store, 10)
    target = _decision(store, 4)
    _sql(store, "UPDATE decisions SET hash = '" + "ab" * 32 + "' WHERE seq = 4")
    assert _first_break(_report(store)) == (4, target, "altered")
    _sql(store, "UPDATE decisions SET prev_hash = hash, hash = '' WHERE seq = 4")
    assert _first_break(_report(store))[:2] == (4, target)


@pytest.mark.parametrize("seq", [1, 6, 12])
async def test_a_deleted_record_breaks_the_link_of_the_next(
    tmp_path: Path, seq: int, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "audit.sqlite"
    await _store(store, 12)
    following = _decision(store, seq + 1) if seq < 12 else _decision(store, seq)
    _sql(store, f"DELETE FROM decisions WHERE seq = {seq}")
    report = _report(store)
    assert not report.ok
    if seq < 12:
        assert _first_break(report) == (seq + 1, following, "unlinked")
    else:  # the last one: the writer session's recorded head names it
        assert _first_break(report) == (12, following, "head_missing")
    assert cli("audit", "verify", "--path", str(store)) == 1
    assert following in capsys.readouterr().out


async def test_deleting_the_tail_and_the_session_records_is_still_found(tmp_path: Path) -> None:
    store = tmp_path / "audit.sqlite"
    await _store(store, 12)
    last = _decision(store, 12)
    _sql(store, "DELETE FROM decisions WHERE seq > 9",
         "UPDATE sessions SET assigned_high = 9, last_seq = 9, head_seq = NULL")
    # the checkpoint of the session's last batch still names the removed head
    assert _first_break(_report(store)) == (12, last, "rewritten")


async def test_reordered_records_are_named(tmp_path: Path) -> None:
    store = tmp_path / "audit.sqlite"
    await _store(store, 10)
    five, six = _decision(store, 5), _decision(store, 6)
    # swap two sequence numbers: each record now sits where its hash says it does not
    _sql(store, "UPDATE decisions SET seq = -1 WHERE seq = 5", "UPDATE decisions SET seq = 5 WHERE seq = 6",
         "UPDATE decisions SET seq = 6 WHERE seq = -1")
    report = _report(store)
    assert _first_break(report) == (5, six, "altered")
    assert {b.decision_id for b in report.gateways[0].breaks} >= {five, six}


async def test_swapped_commit_order_is_named(tmp_path: Path) -> None:
    store = tmp_path / "audit.sqlite"
    await _store(store, 10)
    four = _decision(store, 4)
    _sql(store, "UPDATE decisions SET id = -4 WHERE seq = 3", "UPDATE decisions SET id = 3 WHERE seq = 4",
         "UPDATE decisions SET id = 4 WHERE seq = -4 OR id = -4")
    assert _first_break(_report(store)) == (4, four, "out_of_order")


async def _rewrite_chain_after(store: Path, seq: int) -> None:
    """What an intruder who knows the algorithm (not the key) does: edit, then recompute every later hash,
    fix the sessions' heads and drop the stored checkpoints that now contradict the store."""
    with contextlib.closing(sqlite3.connect(str(store), isolation_level=None)) as conn:
        conn.row_factory = sqlite3.Row
        conn.execute(f"UPDATE decisions SET decision = 'deny', status = 403 WHERE seq = {seq}")
        columns = table_columns(conn)
        canonical = Canonical(sorted(columns), columns)
        rows = conn.execute(
            f"SELECT id, prev_hash, {', '.join(canonical.names)} FROM decisions ORDER BY seq").fetchall()
        prev = GENESIS
        for row in rows:
            new = record_hash(prev, canonical.form(tuple(row)[2:], coerce=False)[0])
            conn.execute("UPDATE decisions SET prev_hash = ?, hash = ? WHERE id = ?", (prev, new, row["id"]))
            prev = new
        conn.execute("UPDATE sessions SET head_hash = (SELECT hash FROM decisions WHERE seq = sessions.head_seq)")
        conn.execute("DELETE FROM checkpoints")


async def test_a_checkpoint_signed_before_a_rewrite_exposes_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "audit.sqlite"
    await _store(store, 10)
    await _store(store, 10)
    # the auditor keeps the checkpoints as they were exported
    assert cli("audit", "checkpoints", "--path", str(store)) == 0
    kept = tmp_path / "checkpoints.jsonl"
    kept.write_text(capsys.readouterr().out)
    assert len(read_entries(kept.read_text())) == 2
    assert cli("audit", "verify", "--path", str(store), "--checkpoints", str(kept)) == 0
    capsys.readouterr()

    await _rewrite_chain_after(store, 4)
    assert _report(store).ok  # the store alone cannot tell: the chain was recomputed
    report = _report(store, kept)
    assert _first_break(report) == (10, _decision(store, 10), "rewritten")
    assert cli("audit", "verify", "--path", str(store), "--checkpoints", str(kept)) == 1
    out = capsys.readouterr().out
    assert "rewritten" in out and _decision(store, 10) in out


async def test_a_forged_checkpoint_file_entry_is_refused(tmp_path: Path) -> None:
    store = tmp_path / "audit.sqlite"
    await _store(store, 5)
    with contextlib.closing(reader(store)) as conn:
        entries = store_entries(conn)
    header, payload, signature = entries[0]["jws"].split(".")
    entries[0]["jws"] = ".".join((header, payload[:-2] + ("AA" if payload[-2:] != "AA" else "BB"), signature))
    kept = tmp_path / "checkpoints.jsonl"
    kept.write_text("\n".join(json.dumps(e) for e in entries))
    assert not _report(store, kept).ok


async def test_purge_then_verify_passes_and_the_marker_is_signed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "audit.sqlite"
    await _store(store, 30, old=12)
    assert cli("audit", "checkpoints", "--path", str(store)) == 0
    before = capsys.readouterr().out
    assert cli("audit", "purge", "--path", str(store), "--older-than", "5d") == 0
    capsys.readouterr()
    report = _report(store)
    assert report.ok, [b.as_dict() for g in report.gateways for b in g.breaks]
    assert report.gateways[0].chained == 18
    with contextlib.closing(reader(store)) as conn:
        marker = conn.execute("SELECT * FROM checkpoints WHERE kind = 'purge'").fetchone()
        purge_row = conn.execute("SELECT * FROM purges").fetchone()
    assert (marker["from_seq"], marker["seq"]) == (1, 12) and purge_row["head_hash"] == marker["hash"]
    # old checkpoints still check out against the purged store
    kept = tmp_path / "before.jsonl"
    kept.write_text(before)
    assert _report(store, kept).ok
    # the chain goes on after the purge, and a later edit is still found
    await _store(store, 3)
    assert _report(store).ok
    _sql(store, "UPDATE decisions SET status = 500 WHERE seq = 20")
    assert _first_break(_report(store))[0] == 20


async def test_purge_stops_before_a_newer_record(tmp_path: Path) -> None:
    store = tmp_path / "audit.sqlite"
    async with running(settings(store)) as log:
        for index in range(10):
            old = index != 3  # record 4 arrived late: newer than the cutoff, between old ones
            await log.record(make_record(time=time.time() - (10 * 86400 if old else 0)))
    assert cli("audit", "purge", "--path", str(store), "--older-than", "5d") == 0
    with contextlib.closing(reader(store)) as conn:
        assert [r[0] for r in conn.execute("SELECT seq FROM decisions ORDER BY seq")] == list(range(4, 11))
    assert _report(store).ok


async def test_a_column_added_later_is_covered_and_old_records_still_verify(tmp_path: Path) -> None:
    store = tmp_path / "audit.sqlite"
    await _store(store, 5)
    _sql(store, "ALTER TABLE decisions ADD COLUMN subjects TEXT NOT NULL DEFAULT '[]'")
    assert _report(store).ok  # stored before the column: it reads as its default, which is left out
    _sql(store, "UPDATE decisions SET subjects = '[[\"c:1\"]]' WHERE seq = 3")
    assert _first_break(_report(store))[:1] == (3,)


async def test_the_chain_continues_across_sessions_and_gateway_ids(tmp_path: Path) -> None:
    store = tmp_path / "audit.sqlite"
    await _store(store, 4, gateway_id="a")
    await _store(store, 4, gateway_id="b")
    await _store(store, 4, gateway_id="a")
    with contextlib.closing(reader(store)) as conn:
        fifth = conn.execute("SELECT prev_hash FROM decisions WHERE gateway_id = 'a' AND seq = 5").fetchone()[0]
        fourth = conn.execute("SELECT hash FROM decisions WHERE gateway_id = 'a' AND seq = 4").fetchone()[0]
    assert fifth == fourth
    report = _report(store)
    assert report.ok and [g.chained for g in report.gateways] == [8, 4]


async def test_checkpoints_are_signed_periodically_and_at_close(tmp_path: Path) -> None:
    store = tmp_path / "audit.sqlite"
    async with running(settings(store, checkpoint_interval_seconds=0)) as log:
        for _ in range(3):
            await log.record(make_record())
            await wait_until_async(lambda: log.stats.committed >= 1 and log.queue_depth == 0,
                                   message="the record committed and the queue empty")
    with contextlib.closing(reader(store)) as conn:
        kinds = [r[0] for r in conn.execute("SELECT kind FROM checkpoints")]
    assert kinds and set(kinds) == {"head"}
    key = Path(f"{store}.signing-key")
    assert key.stat().st_mode & 0o777 == 0o600


async def test_a_store_of_an_older_gateway_verifies_and_chains_from_there(tmp_path: Path) -> None:
    store = tmp_path / "audit.sqlite"
    await _store(store, 5)
    # as a version 2 gateway would have left it: no hashes, no heads, no checkpoints
    _sql(store, "UPDATE decisions SET prev_hash = '', hash = ''", "UPDATE sessions SET head_seq = NULL",
         "DELETE FROM checkpoints")
    report = _report(store)
    assert report.ok and report.gateways[0].unchained == 5
    await _store(store, 3)
    report = _report(store)
    assert report.ok and (report.gateways[0].unchained, report.gateways[0].chained) == (5, 3)


async def test_checkpoints_travel_with_the_exported_spans_and_verify_the_store(tmp_path: Path) -> None:
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    store = tmp_path / "audit.sqlite"
    exporter = InMemorySpanExporter()
    async with running(settings(store, export_interval_seconds=0.01), span_exporter=exporter) as log:
        for _ in range(20):
            await log.record(make_record())
    _sql(store, "UPDATE decisions SET gateway_id = gateway_id")  # nothing changed: still verifies
    spans = exporter.get_finished_spans()
    entries = [
        {"jws": attrs["gateway.audit.checkpoint.jws"], "jwk": json.loads(str(attrs["gateway.audit.checkpoint.jwk"]))}
        for attrs in [*(e.attributes for s in spans for e in s.events if e.name == "audit.checkpoint"),
                      *(s.attributes for s in spans if s.name == "audit.checkpoint")]
        if attrs is not None
    ]
    assert entries, "no checkpoint was exported"
    kept = tmp_path / "collected.jsonl"
    kept.write_text("\n".join(json.dumps(e) for e in entries))
    assert _report(store, kept).ok
    await _rewrite_chain_after(store, 2)
    assert not _report(store, kept).ok
