"""The store's promises: durable commit before return, nothing dropped in async bursts, sequences."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import sqlite3
from pathlib import Path

import pytest

from gateway.audit.log import AuditLog, AuditUnavailable
from gateway.audit.maintenance import verify
from gateway.audit.schema import connect_reader, record_from_row

from .helpers import make_record, reader, running, settings, stored_sequences, write_lock


async def test_durable_record_is_committed_when_record_returns(tmp_path: Path) -> None:
    store = tmp_path / "audit.sqlite"
    async with running(settings(store, mode="durable", busy_timeout_seconds=5.0)) as log:
        rec = make_record()
        await log.record(rec)
        # an independent connection sees it at once: it was committed before record() returned
        with contextlib.closing(reader(store)) as conn:
            row = conn.execute("SELECT seq, status FROM decisions WHERE decision_id = ?", (rec.decision_id,))
            assert tuple(row.fetchone()) == (1, 200)


async def test_durable_record_waits_for_the_commit(tmp_path: Path) -> None:
    store = tmp_path / "audit.sqlite"
    async with running(settings(store, mode="durable", busy_timeout_seconds=5.0)) as log:
        await log.record(make_record())
        rec = make_record()
        with write_lock(store):
            pending = asyncio.create_task(log.record(rec))
            await asyncio.sleep(0.3)
            # the writer cannot commit while another connection holds the write lock
            assert not pending.done()
            with contextlib.closing(reader(store)) as conn:
                assert conn.execute("SELECT count(*) FROM decisions").fetchone()[0] == 1
        await asyncio.wait_for(pending, 10)
        with contextlib.closing(reader(store)) as conn:
            assert conn.execute("SELECT count(*) FROM decisions WHERE decision_id = ?",
                                (rec.decision_id,)).fetchone()[0] == 1


@pytest.mark.parametrize("mode", ["async", "durable"])
async def test_burst_larger_than_the_queue_loses_nothing(tmp_path: Path, mode: str) -> None:
    store = tmp_path / "audit.sqlite"
    records = [make_record() for _ in range(3000)]
    async with running(settings(store, mode=mode, queue_size=50, batch_size=16)) as log:
        depths: list[int] = []

        async def one(rec: object) -> None:
            await log.record(rec)  # type: ignore[arg-type]
            depths.append(log.queue_depth)

        await asyncio.gather(*(one(r) for r in records))
        assert log.stats.full_waits > 0  # the queue really was full and producers waited
        assert max(depths) <= 50 + 16
    assert log.stats.lost == 0
    assert stored_sequences(store) == list(range(1, 3001))
    with contextlib.closing(reader(store)) as conn:
        ids = {row[0] for row in conn.execute("SELECT decision_id FROM decisions")}
    assert ids == {r.decision_id for r in records}


async def test_async_record_returns_before_commit_and_close_drains(tmp_path: Path) -> None:
    store = tmp_path / "audit.sqlite"
    log = AuditLog(settings(store, mode="async"))
    await log.start()
    for _ in range(500):
        await log.record(make_record())
    await log.close()
    assert stored_sequences(store) == list(range(1, 501))
    with contextlib.closing(reader(store)) as conn:
        closed = conn.execute("SELECT closed_us, last_seq FROM sessions").fetchone()
    assert closed["closed_us"] is not None and closed["last_seq"] == 500


async def test_sequence_continues_across_restarts_of_a_stable_gateway_id(tmp_path: Path) -> None:
    store = tmp_path / "audit.sqlite"
    for _ in range(3):
        async with running(settings(store)) as log:
            for _ in range(10):
                await log.record(make_record())
    assert stored_sequences(store) == list(range(1, 31))
    with contextlib.closing(connect_reader(str(store))) as conn:
        report = verify(conn)
    assert report.ok and report.gateways[0].sessions == 3 and not report.gateways[0].gaps


async def test_default_gateway_id_names_host_and_process(tmp_path: Path) -> None:
    async with running(settings(tmp_path / "a.sqlite", gateway_id="")) as log:
        rec = make_record()
        await log.record(rec)
    assert log.gateway_id.endswith(f"-{os.getpid()}")
    assert rec.gateway_id == log.gateway_id and rec.sequence == 1


async def test_a_second_live_writer_with_the_same_gateway_id_is_refused(tmp_path: Path) -> None:
    store = tmp_path / "audit.sqlite"
    async with running(settings(store)):
        # same id, another (live) process: the parent of this test process stands in for it
        with contextlib.closing(sqlite3.connect(str(store), isolation_level=None)) as conn:
            conn.execute("UPDATE sessions SET pid = ?", (os.getppid(),))
        with pytest.raises(AuditUnavailable, match="already writing"):
            await AuditLog(settings(store)).start()
        async with running(settings(store, gateway_id="gw-other")) as other:
            await other.record(make_record())


async def test_stored_record_round_trips_every_field(tmp_path: Path) -> None:
    store = tmp_path / "audit.sqlite"
    rec = make_record(
        parent_span_id="b7ad6b7169203331", recipient="salesforce", consent_ref="consent-1",
        masked_fields=("/card_number", "/expiry"), policy_hash="sha256:abc", upstream_ms=12.5,
        duration_us=1500, extra={"note": "x"}, decision="deny", reason="policy", status=403,
    )
    async with running(settings(store)) as log:
        await log.record(rec)
    with contextlib.closing(reader(store)) as conn:
        back = record_from_row(conn.execute("SELECT * FROM decisions").fetchone())
    assert back.time == pytest.approx(rec.time, abs=1e-6)  # stored in whole microseconds
    assert dataclasses.replace(back, time=rec.time) == rec


async def test_missing_trace_ids_are_filled(tmp_path: Path) -> None:
    rec = make_record(trace_id="", span_id="")
    async with running(settings(tmp_path / "a.sqlite")) as log:
        await log.record(rec)
    assert len(rec.trace_id) == 32 and len(rec.span_id) == 16


async def test_duplicate_decision_id_is_rejected_alone(tmp_path: Path) -> None:
    store = tmp_path / "audit.sqlite"
    first = make_record()
    async with running(settings(store, mode="durable")) as log:
        await log.record(first)
        duplicate = make_record(decision_id=first.decision_id)
        others = [make_record() for _ in range(5)]
        await asyncio.gather(*(log.record(r) for r in [*others[:2], duplicate, *others[2:]]),
                             return_exceptions=True)
        assert log.healthy
        assert log.stats.rejected == 1
    with contextlib.closing(reader(store)) as conn:
        stored = {row[0] for row in conn.execute("SELECT decision_id FROM decisions")}
    assert stored == {first.decision_id, *(r.decision_id for r in others)}
    # the rejected record's sequence number is missing, so verify shows it
    with contextlib.closing(connect_reader(str(store))) as conn:
        report = verify(conn)
    assert not report.ok and [(g.first, g.last) for g in report.gateways[0].gaps] == [(duplicate.sequence,) * 2]


async def test_record_outside_start_and_close_is_refused(tmp_path: Path) -> None:
    log = AuditLog(settings(tmp_path / "a.sqlite"))
    with pytest.raises(AuditUnavailable):
        await log.record(make_record())
    await log.start()
    with pytest.raises(RuntimeError):
        await log.start()
    await log.close()
    with pytest.raises(AuditUnavailable):
        await log.record(make_record())
    assert not log.healthy


async def test_a_malformed_record_is_rejected_alone(tmp_path: Path) -> None:
    store = tmp_path / "audit.sqlite"
    async with running(settings(store, mode="durable")) as log:
        await log.record(make_record())
        broken = make_record(time="yesterday")  # a caller's bug: not a number
        with pytest.raises(AuditUnavailable, match="malformed"):
            await log.record(broken)
        await log.record(make_record())
        assert log.healthy and log.stats.rejected == 1
    assert stored_sequences(store) == [1, 3]  # the gap shows in verify
