"""``verify`` finds every missing sequence number; ``purge`` removes old records without creating gaps."""

from __future__ import annotations

import argparse
import contextlib
import json
import sqlite3
import time
from pathlib import Path

import pytest

from gateway.audit import commands
from gateway.audit.maintenance import purge, verify
from gateway.audit.schema import connect_maintenance, connect_reader

from .helpers import make_record, reader, running, settings, stored_sequences


def cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="gateway")
    commands.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    status: int = args.func(args)
    return status


async def _store(path: Path, count: int, *, old: int = 0, gateway_id: str = "gw-test") -> None:
    """``count`` records, the first ``old`` of them ten days old."""
    async with running(settings(path, gateway_id=gateway_id)) as log:
        for index in range(count):
            when = time.time() - (10 * 86400 if index < old else 0)
            await log.record(make_record(time=when))


def _delete(path: Path, where: str) -> None:
    with contextlib.closing(sqlite3.connect(str(path), isolation_level=None)) as conn:
        conn.execute(f"DELETE FROM decisions WHERE {where}")


def _report(path: Path) -> dict[str, object]:
    with contextlib.closing(connect_reader(str(path))) as conn:
        report = verify(conn)
    return {"ok": report.ok, "gaps": [(g.first, g.last, g.kind) for r in report.gateways for g in r.gaps]}


async def test_clean_store_verifies(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "audit.sqlite"
    await _store(store, 20)
    assert cli("audit", "verify", "--path", str(store)) == 0
    assert capsys.readouterr().out.startswith("OK  gw-test: sequence 1..20, 20 stored")


@pytest.mark.parametrize(
    ("where", "gap"),
    [("seq = 7", (7, 7)), ("seq BETWEEN 3 AND 5", (3, 5)), ("seq = 1", (1, 1)), ("seq = 20", (20, 20))],
)
async def test_a_deleted_record_is_reported_as_a_gap(tmp_path: Path, where: str, gap: tuple[int, int]) -> None:
    store = tmp_path / "audit.sqlite"
    await _store(store, 20)
    _delete(store, where)
    # the first and the last record are found missing too: the session knows its first and last number
    assert _report(store) == {"ok": False, "gaps": [(*gap, "missing")]}
    assert cli("audit", "verify", "--path", str(store)) == 1


async def test_verify_json_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "audit.sqlite"
    await _store(store, 5)
    _delete(store, "seq = 2")
    assert cli("audit", "verify", "--path", str(store), "--format", "json") == 1
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] is False
    assert out["gateways"][0]["gaps"] == [
        {"first": 2, "last": 2, "count": 1, "kind": "missing", "mode": "async", "loss": True}
    ]


async def test_each_gateway_id_is_checked_on_its_own(tmp_path: Path) -> None:
    store = tmp_path / "audit.sqlite"
    await _store(store, 5, gateway_id="a")
    await _store(store, 5, gateway_id="b")
    _delete(store, "gateway_id = 'b' AND seq = 3")
    with contextlib.closing(connect_reader(str(store))) as conn:
        report = verify(conn)
    assert [(g.gateway_id, g.ok) for g in report.gateways] == [("a", True), ("b", False)]


async def test_purge_removes_old_records_and_leaves_no_gap(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "audit.sqlite"
    await _store(store, 30, old=12)
    assert cli("audit", "purge", "--path", str(store), "--older-than", "5d", "--dry-run") == 0
    assert "would remove 12 decisions" in capsys.readouterr().out
    assert stored_sequences(store) == list(range(1, 31))
    assert cli("audit", "purge", "--path", str(store), "--older-than", "5d") == 0
    out = capsys.readouterr().out
    assert "removed 12 decisions" in out and "gw-test: purged through sequence 12" in out
    assert stored_sequences(store) == list(range(13, 31))
    with contextlib.closing(reader(store)) as conn:
        assert conn.execute("SELECT count(*) FROM decision_terms WHERE ref <= 12").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM decision_terms").fetchone()[0] == 18 * 4
    assert _report(store) == {"ok": True, "gaps": []}
    # a record lost after the purge is still found
    _delete(store, "seq = 20")
    assert _report(store) == {"ok": False, "gaps": [(20, 20, "missing")]}


async def test_purge_keeps_records_not_yet_exported(tmp_path: Path) -> None:
    store = tmp_path / "audit.sqlite"
    await _store(store, 10, old=10)
    with contextlib.closing(sqlite3.connect(str(store), isolation_level=None)) as conn:
        conn.execute("INSERT INTO export_state VALUES ('otlp', 4, 'x', 0, 4, 0)")
    with contextlib.closing(connect_maintenance(str(store))) as conn:
        result = purge(conn, round(time.time() * 1e6))
    assert (result.removed, result.kept_unexported) == (4, 6)
    assert stored_sequences(store) == list(range(5, 11))
    with contextlib.closing(connect_maintenance(str(store))) as conn:
        result = purge(conn, round(time.time() * 1e6), include_unexported=True)
    assert result.removed == 6
    assert _report(store) == {"ok": True, "gaps": []}


async def test_sequence_continues_after_everything_was_purged(tmp_path: Path) -> None:
    store = tmp_path / "audit.sqlite"
    await _store(store, 5, old=5)
    assert cli("audit", "purge", "--path", str(store), "--older-than", "1d") == 0
    await _store(store, 3)
    assert stored_sequences(store) == [6, 7, 8]
    assert _report(store) == {"ok": True, "gaps": []}


def test_purge_needs_a_positive_age(tmp_path: Path) -> None:
    assert cli("audit", "purge", "--path", str(tmp_path / "x.sqlite"), "--older-than", "soon") == 2
    assert cli("audit", "purge", "--path", str(tmp_path / "x.sqlite"), "--older-than", "1d") == 1  # no store
