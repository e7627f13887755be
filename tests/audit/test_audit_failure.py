"""An unwritable store: fail closed (503s, recorded on recovery) or fail open (loud, losses show as gaps).

How the store is made unwritable: another connection holds its write lock (``BEGIN IMMEDIATE``), so
every write of the gateway fails with SQLITE_BUSY after ``busy_timeout``. That is a real condition
(another process, a backup or a stuck ``sqlite3`` shell holding a write transaction) that goes
through the writer's ordinary error path, and it is reversible, so recovery is tested too. File
permissions cannot be used (tests may run as root, where chmod does not stop writes), and switching
the writer's own connection to ``query_only`` would need a test hook inside the writer. A store that
cannot even be opened (its directory is a regular file) is tested at start-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.audit.log import AuditLog, AuditUnavailable
from gateway.audit.maintenance import verify
from gateway.audit.schema import connect_reader
from tests.support.poll import wait_until_async

from .helpers import make_record, reader, running, settings, stored_sequences, write_lock


async def _until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    await wait_until_async(condition, timeout=timeout, interval=0.02, message="the audit log's state")


async def test_start_fails_when_the_store_cannot_be_opened(tmp_path: Path) -> None:
    not_a_directory = tmp_path / "file"
    not_a_directory.write_text("x")
    log = AuditLog(settings(not_a_directory / "audit.sqlite"))
    with pytest.raises(AuditUnavailable, match="cannot open the audit store"):
        await log.start()
    assert not log.healthy


@pytest.mark.parametrize("mode", ["durable", "async"])
async def test_fail_closed_refuses_then_recovers_and_records_the_refusals(
    tmp_path: Path, mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = tmp_path / "audit.sqlite"
    caplog.set_level(logging.ERROR, logger="gateway.audit")
    async with running(settings(store, mode=mode, fail_closed=True)) as log:
        await log.record(make_record())
        with write_lock(store):
            first = make_record(upstream_ms=2.5)  # the upstream has already answered it
            if mode == "durable":
                with pytest.raises(AuditUnavailable, match="locked"):
                    await log.record(first)
            else:
                await log.record(first)  # queued before the failure is known: accepted
                await _until(lambda: not log.healthy)
            assert not log.healthy and "locked" in (log.last_error or "")
            refused = [make_record() for _ in range(3)]
            for rec in refused:
                with pytest.raises(AuditUnavailable):
                    await log.record(rec)
        await _until(lambda: log.healthy)
        assert log.last_error is None
        await log.record(make_record())
    assert any("AUDIT STORE UNWRITABLE" in r.getMessage() for r in caplog.records)
    assert stored_sequences(store) == list(range(1, 7))
    with contextlib.closing(reader(store)) as conn:
        rows = conn.execute("SELECT decision_id, status, reason FROM decisions").fetchall()
    statuses = {row[0]: (row[1], row[2]) for row in rows}
    for rec in refused:
        assert statuses[rec.decision_id] == (503, "audit_unavailable")
    if mode == "durable":
        # answered 503, and the record keeps what the upstream had done
        assert statuses[first.decision_id] == (503, "audit_unavailable")
        assert first.extra == {"upstream_status": "200"}
    else:
        assert statuses[first.decision_id] == (200, "allowed")  # its response had already gone out
    with contextlib.closing(connect_reader(str(store))) as conn:
        assert verify(conn).ok


async def test_fail_open_goes_on_and_the_loss_shows_in_verify(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = tmp_path / "audit.sqlite"
    caplog.set_level(logging.ERROR, logger="gateway.audit")
    async with running(settings(store, mode="async", fail_closed=False, queue_size=20, batch_size=5)) as log:
        await log.record(make_record())
        await _until(lambda: log.queue_depth == 0)
        with write_lock(store):
            for _ in range(200):
                await log.record(make_record())  # never raises, never waits for the store
            assert not log.healthy
            assert log.stats.lost > 0
        await _until(lambda: log.healthy and log.queue_depth == 0)
        await log.record(make_record())
    lost = log.stats.lost
    assert any("AUDIT RECORDS LOST" in r.getMessage() for r in caplog.records)
    stored = stored_sequences(store)
    assert len(stored) == 202 - lost
    with contextlib.closing(connect_reader(str(store))) as conn:
        report = verify(conn)
    assert not report.ok
    assert sum(gap.count for gap in report.gateways[0].gaps) == lost


async def test_fail_open_durable_releases_callers_while_the_store_is_down(tmp_path: Path) -> None:
    store = tmp_path / "audit.sqlite"
    async with running(settings(store, mode="durable", fail_closed=False)) as log:
        with write_lock(store):
            await asyncio.wait_for(log.record(make_record()), 10)  # released, not stuck
            await asyncio.wait_for(log.record(make_record()), 10)
            assert not log.healthy
        await _until(lambda: log.healthy and log.queue_depth == 0)
    assert stored_sequences(store) == [1, 2]


async def test_close_gives_up_on_a_store_that_stays_unwritable(tmp_path: Path) -> None:
    store = tmp_path / "audit.sqlite"
    log = AuditLog(settings(store, mode="async", fail_closed=True, close_timeout_seconds=0.3))
    await log.start()
    with write_lock(store):
        for _ in range(5):
            await log.record(make_record())
        await _until(lambda: not log.healthy)
        await log.close()
    assert log.stats.lost == 5
    assert stored_sequences(store) == []
