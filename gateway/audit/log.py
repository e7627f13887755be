"""``AuditLog``: every decision into the SQLite store through one writer thread with group commits.

Hot path. ``record()`` runs on the gateway's event loop: it numbers the record (the per-gateway
sequence), appends it to an in-memory deque and, only if the writer is idle, sets a
``threading.Event``. No per-record thread hop, lock or serialisation happens there; the writer
turns records into rows. In ``async`` mode that is all (a few microseconds); in ``durable`` mode
the caller also awaits a future that the writer resolves, one ``call_soon_threadsafe`` per batch,
after the batch's commit (synchronous=FULL: the commit survives power loss).

Buffering. At most ``queue_size`` records wait in memory. When the queue is full, ``record()``
waits for room; it never drops while the store is writable. Records are committed in sequence
order, so a missing sequence number below the highest stored one means a record was lost.

Store failures (lock held too long, disk full, I/O error, read-only file). The failing batch is
kept and retried with back-off; ``healthy`` turns False and ``last_error`` says why; the first
failure is logged at ERROR, then a reminder every 10 s. With ``fail_closed`` every ``record()``
raises ``AuditUnavailable`` until a write succeeds again (durable callers already waiting too): the
gateway answers 503, and those records, while the queue has room, are kept and stored on recovery
as the 503s they became. Without it requests go on: durable callers are released, records stay
queued for retry, and once the queue is full new records are dropped, counted
(``gateway.audit.records.lost``), logged, and still take a sequence number so the loss shows as a
gap in ``gateway audit verify``. A record rejected by a constraint (duplicate decision id, two
writers sharing a gateway id) is logged and skipped, never allowed to block the queue.

What it never does: drop a record while the store is writable, write a token or a body (the
record has no field for them), or block the event loop on SQLite.

Crash behaviour: durable mode loses nothing that was acknowledged; async mode loses what was still
queued (at most ``queue_size`` records). ``sessions.assigned_high`` (written with each batch) and
clean-close markers let ``verify`` report such losses after a restart, as far as the last batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opentelemetry.metrics import MeterProvider
from opentelemetry.sdk.trace.export import SpanExporter

from gateway.audit.chain import CHAIN_COLUMNS, GENESIS, Canonical, ChainError, link, table_columns
from gateway.audit.checkpoints import head_claims, insert_checkpoint, register_key
from gateway.audit.errors import AuditUnavailable
from gateway.audit.export import OutboxExporter, otlp_span_exporter
from gateway.audit.metrics import AuditMetrics
from gateway.audit.record import DecisionRecord
from gateway.audit.schema import (
    DECISION_COLUMNS,
    INSERT_TERM,
    StoreError,
    connect_writer,
    record_row,
    record_terms,
    time_to_us,
)
from gateway.audit.settings import AuditSettings
from gateway.audit.signing import KeyFileError, Signer, load_or_create_key
from gateway.audit.tracecontext import new_span_id, new_trace_id

__all__ = ["AuditLog", "AuditStats", "AuditUnavailable"]

logger = logging.getLogger("gateway.audit")

_Item = tuple[DecisionRecord, "asyncio.Future[None] | None"]
_REMINDER_SECONDS = 10.0
_CONTENT_COLUMNS = DECISION_COLUMNS[1:]  # what record_row gives, in that order (the chain hashes them)
INSERT_CHAINED = (
    f"INSERT INTO decisions ({', '.join((*DECISION_COLUMNS, *CHAIN_COLUMNS))}) "
    f"VALUES ({', '.join('?' for _ in (*DECISION_COLUMNS, *CHAIN_COLUMNS))})"
)


@dataclass
class AuditStats:
    """Counters since ``start()`` (plain ints, read by tests and ``/readyz``-style reports)."""

    committed: int = 0
    batches: int = 0
    lost: int = 0
    refused: int = 0
    rejected: int = 0
    write_errors: int = 0
    full_waits: int = 0


class AuditLog:
    """The audit trail of one gateway process. Bound to the event loop that calls ``start()``."""

    def __init__(
        self,
        settings: AuditSettings,
        *,
        meter_provider: MeterProvider | None = None,
        span_exporter: SpanExporter | None = None,
        prepare: Callable[[DecisionRecord], None] | None = None,
    ) -> None:
        """``prepare`` runs in the writer thread on each record before it is written (the gateway's
        hook writes the decision's replay inputs and its shadow decision there, off the request path);
        an error in it is logged and the record is written without what it would have added."""
        self.settings = settings
        self._prepare = prepare
        self.gateway_id = settings.gateway_id or f"{socket.gethostname()}-{os.getpid()}"
        self.stats = AuditStats()
        self._durable = settings.durable
        self._fail_closed = settings.fail_closed
        self._queue_size = settings.queue_size
        self._batch_size = settings.batch_size
        self._linger = settings.linger_seconds
        self._queue: deque[_Item] = deque()
        self._inflight = 0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._space_waiters: deque[asyncio.Future[None]] = deque()
        self._next_seq = 1
        self._accepting = False
        self._started = False
        self._healthy = False
        self._last_error: str | None = None
        self._unhealthy_since = 0.0
        self._last_reminder = 0.0
        self._last_loss_log = 0.0
        self._close_deadline = 0.0
        self._conn: sqlite3.Connection | None = None
        self._session_id = 0
        # the hash chain (gateway/audit/chain.py): the committed head of this gateway id's chain
        self._canonical: Canonical | None = None
        self._signer: Signer | None = None
        self._head = bytes.fromhex(GENESIS)
        self._head_seq = 0
        self._head_decision = ""
        self._checkpointed_seq = 0
        self._last_checkpoint = 0.0
        self._final_batch = False
        self.checkpoints = 0
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._span_exporter = span_exporter
        self.exporter: OutboxExporter | None = None
        self.metrics = AuditMetrics(
            meter_provider,
            queue_depth=lambda: self.queue_depth,
            healthy=lambda: self._healthy,
            export_lag=lambda: self.exporter.lag_seconds if self.exporter is not None else None,
        )

    # -- state ---------------------------------------------------------------------------------------

    @property
    def healthy(self) -> bool:
        """True while the last write to the store succeeded (and the log is running)."""
        return self._healthy and self._accepting

    @property
    def last_error(self) -> str | None:
        """Why the store cannot be written, while it cannot; None when healthy."""
        return self._last_error

    @property
    def queue_depth(self) -> int:
        """Records accepted and not yet committed (including the batch being written)."""
        return len(self._queue) + self._inflight

    @property
    def next_sequence(self) -> int:
        return self._next_seq

    @property
    def mode(self) -> str:
        return self.settings.mode

    # -- life cycle ----------------------------------------------------------------------------------

    async def start(self) -> None:
        """Open (or create) the store, begin a writer session, start the writer and the exporter.

        Raises ``AuditUnavailable`` when the store cannot be opened: a gateway must not run without
        knowing where its sequence continues.
        """
        if self._started:
            raise RuntimeError("AuditLog.start() called twice")
        self._started = True
        self._loop = asyncio.get_running_loop()
        await asyncio.to_thread(self._open)
        self._healthy = True
        self._accepting = True
        self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
        self._thread.start()
        if self._span_exporter is not None or self.settings.traces_url:
            exporter = self._span_exporter or otlp_span_exporter(self.settings)
            self.exporter = OutboxExporter(
                self.settings,
                exporter,
                owner=self.gateway_id,
                on_exported=lambda n: self.metrics.exported.add(n),
                on_failure=lambda: self.metrics.export_failures.add(1),
            )
            self.exporter.start()

    async def close(self) -> None:
        """Stop accepting, commit everything queued (giving up after ``close_timeout_seconds`` if the
        store stays unwritable), mark the session closed, then let the exporter send what it can."""
        if not self._started or self._thread is None:
            return
        self._accepting = False
        self._close_deadline = time.monotonic() + self.settings.close_timeout_seconds
        self._stop.set()
        self._wake.set()
        await asyncio.to_thread(self._thread.join, self.settings.close_timeout_seconds + 5.0)
        self._release_space_waiters()
        if self.exporter is not None:
            await asyncio.to_thread(self.exporter.close, min(5.0, self.settings.close_timeout_seconds))

    # -- the hot path --------------------------------------------------------------------------------

    async def record(self, rec: DecisionRecord) -> None:
        """Accept one decision record; call it once per request, from the event loop, before the
        response starts, and do not modify ``rec`` afterwards (the writer reads it later).

        durable: returns after the record's group commit. async: returns once queued, waiting while
        the queue is full. Raises ``AuditUnavailable`` when the record cannot be stored and
        ``fail_closed`` is on (or the log is not running).
        """
        if not self._accepting:
            self.stats.refused += 1
            raise AuditUnavailable("the audit log is not running")
        if not self._healthy:
            self._record_unhealthy(rec)
            return
        queue = self._queue
        if len(queue) >= self._queue_size and not await self._wait_for_space(rec):
            return
        self._number(rec)
        if self._durable:
            future: asyncio.Future[None] = self._loop.create_future()  # type: ignore[union-attr]
            queue.append((rec, future))
            if not self._wake.is_set():
                self._wake.set()
            await future
            return
        queue.append((rec, None))
        if not self._wake.is_set():
            self._wake.set()

    def _number(self, rec: DecisionRecord) -> None:
        seq = self._next_seq
        self._next_seq = seq + 1
        rec.sequence = seq
        rec.gateway_id = self.gateway_id
        if not rec.span_id:
            rec.span_id = new_span_id()
        if not rec.trace_id:
            rec.trace_id = new_trace_id()

    def check_available(self) -> None:
        """Raise ``AuditUnavailable`` now if ``record()`` would refuse (cheap pre-check before forwarding)."""
        if not self._accepting:
            raise AuditUnavailable("the audit log is not running")
        if not self._healthy and self._fail_closed:
            raise AuditUnavailable(self._unavailable_message())

    def _unavailable_message(self) -> str:
        return f"the audit store cannot be written: {self._last_error or 'unknown error'}"

    def _record_unhealthy(self, rec: DecisionRecord) -> None:
        """The store cannot be written. fail_closed: keep the record (as the 503 it becomes) for when
        the store recovers, if there is room, and raise. Otherwise keep it if there is room, else drop."""
        if self._fail_closed:
            _mark_refused(rec)
            if len(self._queue) < self._queue_size:
                self._number(rec)
                self._queue.append((rec, None))
            self.stats.refused += 1
            self.metrics.records_refused.add(1)
            raise AuditUnavailable(self._unavailable_message())
        if len(self._queue) < self._queue_size:
            self._number(rec)
            self._queue.append((rec, None))
        else:
            self._drop()

    async def _wait_for_space(self, rec: DecisionRecord) -> bool:
        """Wait until the queue has room. False = the record was dealt with otherwise (store down)."""
        loop = self._loop
        assert loop is not None
        while len(self._queue) >= self._queue_size:
            if not self._accepting:
                self.stats.refused += 1
                raise AuditUnavailable("the audit log is closing")
            if not self._healthy:
                self._record_unhealthy(rec)
                return False
            self.stats.full_waits += 1
            waiter = loop.create_future()
            self._space_waiters.append(waiter)
            self._wake.set()
            if len(self._queue) < self._queue_size:
                continue  # the writer made room between the check and the append
            # re-check health and room at least every 0.5 s; the writer wakes waiters after each batch
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(waiter, timeout=0.5)
        return True

    def _drop(self) -> None:
        # The sequence number is spent on purpose: the loss shows as a gap in ``verify``.
        self._next_seq += 1
        self.stats.lost += 1
        self.metrics.records_lost.add(1)
        now = time.monotonic()
        if now - self._last_loss_log >= 5.0:
            self._last_loss_log = now
            logger.error(
                "AUDIT RECORDS LOST: %d so far; the store %s cannot be written (%s) and fail_closed is off",
                self.stats.lost, self.settings.path, self._last_error,
            )

    def _release_space_waiters(self) -> None:
        """Wake as many waiting producers as there is room for (all of them when closing or unhealthy)."""
        waiters = self._space_waiters
        everyone = not self._accepting or not self._healthy
        room = self._queue_size - len(self._queue)
        while waiters and (everyone or room > 0):
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                room -= 1

    # -- opening the store ---------------------------------------------------------------------------

    def _open(self) -> None:
        try:
            conn = connect_writer(
                self.settings.path, durable=self._durable, busy_timeout=self.settings.busy_timeout_seconds
            )
        except (sqlite3.Error, OSError, StoreError) as exc:
            raise AuditUnavailable(f"cannot open the audit store {self.settings.path}: {exc}") from exc
        try:
            signer = Signer(load_or_create_key(Path(self.settings.signing_key_path)))
        except KeyFileError as exc:  # names the file, never the key
            conn.close()
            raise AuditUnavailable(f"cannot load the audit signing key: {exc}") from None
        try:
            self._canonical = Canonical(_CONTENT_COLUMNS, table_columns(conn))
            self._signer = signer
            self._begin_session(conn)
        except (sqlite3.Error, AuditUnavailable, ChainError) as exc:
            conn.close()
            if isinstance(exc, AuditUnavailable):
                raise
            raise AuditUnavailable(f"cannot start a session in the audit store {self.settings.path}: {exc}") from exc
        self._conn = conn

    def _begin_session(self, conn: sqlite3.Connection) -> None:
        host = socket.gethostname()
        conn.execute("BEGIN IMMEDIATE")
        try:
            for other in conn.execute(
                "SELECT pid FROM sessions WHERE gateway_id = ? AND host = ? AND closed_us IS NULL AND pid != ?",
                (self.gateway_id, host, os.getpid()),
            ).fetchall():
                if _process_alive(int(other["pid"])):
                    raise AuditUnavailable(
                        f"gateway id {self.gateway_id!r} is already writing {self.settings.path} "
                        f"(pid {other['pid']}); give each writer its own audit gateway_id"
                    )
            high = conn.execute(
                "SELECT max(x) FROM ("
                " SELECT max(seq) AS x FROM decisions WHERE gateway_id = :g"
                " UNION ALL SELECT max(assigned_high) FROM sessions WHERE gateway_id = :g"
                " UNION ALL SELECT max(last_seq) FROM sessions WHERE gateway_id = :g"
                " UNION ALL SELECT max(through_seq) FROM purges WHERE gateway_id = :g)",
                {"g": self.gateway_id},
            ).fetchone()[0]
            self._next_seq = int(high or 0) + 1
            self._load_head(conn)
            assert self._signer is not None
            register_key(conn, self._signer)
            self._session_id = int(
                conn.execute(
                    "INSERT INTO sessions (gateway_id, host, pid, mode, started_us, first_seq, assigned_high) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (self.gateway_id, host, os.getpid(), self.settings.mode, time.time_ns() // 1000,
                     self._next_seq, self._next_seq - 1),
                ).lastrowid
                or 0
            )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _load_head(self, conn: sqlite3.Connection) -> None:
        """Where this gateway id's chain continues: its last stored record, else the anchor of its last
        purge, else the start (a record stored before the chain existed, with no hash, starts one too)."""
        last = conn.execute(
            "SELECT seq, hash, decision_id FROM decisions WHERE gateway_id = ? ORDER BY seq DESC LIMIT 1",
            (self.gateway_id,),
        ).fetchone()
        if last is None:
            last = conn.execute(
                "SELECT through_seq, head_hash, '' FROM purges WHERE gateway_id = ? ORDER BY through_seq DESC LIMIT 1",
                (self.gateway_id,),
            ).fetchone()
        head = str(last[1]) if last is not None and last[1] else GENESIS
        try:
            self._head = bytes.fromhex(head)
        except ValueError:
            self._head = bytes.fromhex(GENESIS)  # a broken stored hash: verify reports it; go on from a fresh start
        self._head_seq = int(last[0]) if last is not None else 0
        self._head_decision = str(last[2]) if last is not None else ""
        self._checkpointed_seq = self._head_seq
        self._last_checkpoint = time.monotonic()

    # -- the writer thread ---------------------------------------------------------------------------

    def _run(self) -> None:
        batch: list[_Item] | None = None
        try:
            while True:
                batch = self._take_batch()
                if batch is None:
                    break
                self._commit(batch)
                batch = None
        except Exception:
            logger.exception("AUDIT WRITER CRASHED: records still queued are lost; the gateway needs a restart")
            self._healthy = False
            self._last_error = "the audit writer crashed"
            self._abandon_queue(batch or [])
        finally:
            self._finish()

    def _abandon_queue(self, batch: list[_Item]) -> None:
        """After a writer crash: nothing will be written any more; waiting durable callers must not hang."""
        self._accepting = False
        waiting = [*batch, *list(self._queue)]
        self._queue.clear()
        self._inflight = 0
        self.stats.lost += len(waiting)
        self.metrics.records_lost.add(len(waiting))
        error = AuditUnavailable(self._unavailable_message())
        outcome = None if not self._fail_closed else error
        self._call_in_loop(_settle_futures, [(future, outcome) for _, future in waiting if future is not None])
        self._call_in_loop(self._release_space_waiters)

    def _take_batch(self) -> list[_Item] | None:
        queue = self._queue
        while not queue:
            if self._stop.is_set():
                return None
            if not self._healthy:
                self._probe()
                continue
            self._wake.clear()
            if queue or self._stop.is_set():
                continue
            self._wake.wait(1.0)
        if not self._durable and self._linger and len(queue) < self._batch_size:
            self._stop.wait(self._linger)  # gather a group commit; returns at once on close()
        count = min(len(queue), self._batch_size)
        self._inflight = count
        batch = [queue.popleft() for _ in range(count)]
        self._final_batch = self._stop.is_set() and not queue  # closing: this batch carries a checkpoint
        if self._space_waiters:
            self._call_in_loop(self._release_space_waiters)
        return batch

    def _commit(self, batch: list[_Item]) -> None:
        rows: list[tuple[Any, ...]] = []
        forms: list[bytes] = []
        terms: list[list[str]] = []
        convertible: list[_Item] = []
        for item in batch:
            if self._prepare is not None:
                try:
                    self._prepare(item[0])
                except Exception:  # never lose the record for its extras
                    logger.exception("preparing audit record %s failed; written without it", item[0].decision_id)
            try:
                row, form, keys = *self._row(item[0]), record_terms(item[0])
            except Exception as exc:  # a malformed record (a caller's bug) must not stop the writer
                self._reject_malformed(item, exc)
                continue
            rows.append(row)
            forms.append(form)
            terms.append(keys)
            convertible.append(item)
        batch = convertible
        if not batch:
            self._inflight = 0
            return
        attempt = 0
        while True:
            try:
                rejected = self._write(rows, forms, terms, batch)
            except sqlite3.Error as exc:
                first_failure = self._healthy
                self._write_failed(exc)
                if first_failure:
                    self._release_durable_callers(batch)
                    # the rows were built before the records became 503s (which still convert: they did)
                    rows, forms = [], []
                    for rec, _ in batch:
                        row, form = self._row(rec)
                        rows.append(row)
                        forms.append(form)
                if not self._pause(attempt):
                    self._give_up(batch)
                    return
                attempt += 1
                continue
            break
        self._write_succeeded()
        self._inflight = 0
        self._settle(batch, rejected)
        self.stats.committed += len(batch) - len(rejected)
        self.stats.batches += 1
        self.metrics.record_batch(rec for index, (rec, _) in enumerate(batch) if index not in rejected)
        if self.exporter is not None:
            self.exporter.notify()

    def _row(self, rec: DecisionRecord) -> tuple[tuple[Any, ...], bytes]:
        """The record's row (its values coerced to the columns' types) and its canonical form."""
        assert self._canonical is not None
        row = record_row(rec)
        form, coerced = self._canonical.form(row, coerce=True)
        return (row if coerced is None else coerced), form

    def _reject_malformed(self, item: _Item, exc: Exception) -> None:
        rec, future = item
        self.stats.rejected += 1
        logger.error(
            "audit record %s (gateway %s, sequence %d) cannot be stored, it is malformed: %s: %s",
            rec.decision_id, rec.gateway_id, rec.sequence, type(exc).__name__, exc,
        )
        if future is not None:
            error = AuditUnavailable("the audit record is malformed") if self._fail_closed else None
            self._call_in_loop(_settle_futures, [(future, error)])

    def _write(
        self, rows: list[tuple[Any, ...]], forms: list[bytes], terms: list[list[str]], batch: list[_Item]
    ) -> set[int]:
        """One transaction for the batch; returns the indexes of records rejected by a constraint.

        Each row is linked to the one before it (the chain head is only advanced once the transaction
        committed, so a retried batch links from the same head again).
        """
        conn = self._conn
        assert conn is not None
        conn.execute("BEGIN IMMEDIATE")
        try:
            found = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'decisions'").fetchone()
            base = int(found[0]) if found else 0
            rejected: set[int] = set()
            head = self._head
            chained: list[tuple[Any, ...]] = []
            for i, (row, form) in enumerate(zip(rows, forms, strict=True), 1):
                digest = link(head, form)
                chained.append((base + i, *row, head.hex(), digest.hex()))
                head = digest
            try:
                conn.executemany(INSERT_CHAINED, chained)
                conn.executemany(INSERT_TERM, self._term_rows(base, rows, terms, batch, rejected))
            except sqlite3.IntegrityError:
                conn.execute("ROLLBACK")
                conn.execute("BEGIN IMMEDIATE")
                found = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'decisions'").fetchone()
                base = int(found[0]) if found else 0
                rejected, head = self._write_one_by_one(conn, base, rows, forms, terms, batch)
            last = max((i for i in range(len(rows)) if i not in rejected), default=-1)
            head_seq, head_decision = (
                (rows[last][2], rows[last][0]) if last >= 0 else (self._head_seq, self._head_decision)
            )
            conn.execute(
                "UPDATE sessions SET assigned_high = ?, head_seq = ?, head_hash = ?, head_decision_id = ? "
                "WHERE id = ?",
                (self._next_seq - 1, head_seq or None, head.hex() if head_seq else None, head_decision or None,
                 self._session_id),
            )
            checkpointed = self._checkpoint_due(head_seq) and self._checkpoint(
                conn, head_seq, head_decision, head.hex(), base + last + 1 if last >= 0 else 0
            )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        self._head, self._head_seq, self._head_decision = head, head_seq, head_decision
        if checkpointed:
            self._checkpointed_seq = head_seq
            self._last_checkpoint = time.monotonic()
            self.checkpoints += 1
        return rejected

    def _checkpoint_due(self, head_seq: int) -> bool:
        if not head_seq or head_seq == self._checkpointed_seq:
            return False
        interval = self.settings.checkpoint_interval_seconds
        return self._final_batch or time.monotonic() - self._last_checkpoint >= interval

    def _checkpoint(self, conn: sqlite3.Connection, seq: int, decision_id: str, hash_hex: str, ref: int) -> bool:
        """Sign the chain head into the batch's transaction; a failure to sign never costs a record."""
        if self._signer is None:
            return False
        try:
            claims = head_claims(self.gateway_id, seq, decision_id, hash_hex, time.time_ns() // 1000)
            insert_checkpoint(conn, self._signer, claims, ref)
        except sqlite3.Error:
            raise
        except Exception:
            logger.exception("signing the audit checkpoint at sequence %d failed; the next batch tries again", seq)
            return False
        return True

    @staticmethod
    def _term_rows(
        base: int, rows: list[tuple[Any, ...]], terms: list[list[str]], batch: list[_Item], skip: set[int]
    ) -> list[tuple[str, int, int, int]]:
        out: list[tuple[str, int, int, int]] = []
        for index, record_terms_ in enumerate(terms):
            if index in skip or not record_terms_:
                continue
            ref = base + index + 1
            time_us = rows[index][3]
            denied = 0 if batch[index][0].decision == "allow" else 1
            out.extend((term, time_us, ref, denied) for term in record_terms_)
        return out

    def _write_one_by_one(
        self, conn: sqlite3.Connection, base: int, rows: list[tuple[Any, ...]], forms: list[bytes],
        terms: list[list[str]], batch: list[_Item],
    ) -> tuple[set[int], bytes]:
        """After a constraint failure: each row alone, the chain linking only the rows that were stored."""
        rejected: set[int] = set()
        head = self._head
        for index, (row, form) in enumerate(zip(rows, forms, strict=True)):
            digest = link(head, form)
            try:
                conn.execute(INSERT_CHAINED, (base + index + 1, *row, head.hex(), digest.hex()))
            except sqlite3.IntegrityError as exc:
                rejected.add(index)
                self.stats.rejected += 1
                rec = batch[index][0]
                logger.error(
                    "audit record %s (gateway %s, sequence %d) rejected by the store: %s",
                    rec.decision_id, rec.gateway_id, rec.sequence, exc,
                )
                continue
            head = digest
        conn.executemany(INSERT_TERM, self._term_rows(base, rows, terms, batch, rejected))
        return rejected, head

    def _release_durable_callers(self, batch: list[_Item]) -> None:
        """The store just failed: durable callers must not hang until it recovers.

        fail_closed: their requests get 503 and their records (kept for retry) say so. Otherwise they
        are released as if committed. Either way the records stay queued and are written on recovery.
        """
        if not self._durable:
            return
        waiting = [item for item in (*batch, *list(self._queue)) if item[1] is not None]
        if self._fail_closed:
            error = AuditUnavailable(self._unavailable_message())
            for rec, _ in waiting:
                _mark_refused(rec)
            self.stats.refused += len(waiting)
            self.metrics.records_refused.add(len(waiting))
            self._call_in_loop(_settle_futures, [(future, error) for _, future in waiting])
        else:
            self._call_in_loop(_settle_futures, [(future, None) for _, future in waiting])

    def _settle(self, batch: list[_Item], rejected: set[int]) -> None:
        if not self._durable:
            return
        error = AuditUnavailable("the audit store rejected the record") if self._fail_closed else None
        outcomes = [
            (future, error if index in rejected else None)
            for index, (_, future) in enumerate(batch)
            if future is not None
        ]
        self._call_in_loop(_settle_futures, outcomes)

    def _call_in_loop(self, callback: Any, *args: Any) -> None:
        loop = self._loop
        if loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting any more
            loop.call_soon_threadsafe(callback, *args)

    def _pause(self, attempt: int) -> bool:
        """Back off before retrying a failed write. False = closing and out of time: give up."""
        delay = min(1.0, 0.02 * 2 ** min(attempt, 10)) * random.uniform(0.8, 1.2)
        if not self._stop.is_set():
            self._stop.wait(delay)
            return True
        remaining = self._close_deadline - time.monotonic()
        if remaining <= 0:
            return False
        time.sleep(min(delay, remaining))
        return True

    def _probe(self) -> None:
        """While unhealthy with nothing to retry, test the store so that health can come back."""
        conn = self._conn
        assert conn is not None
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute(
                    "UPDATE sessions SET assigned_high = ? WHERE id = ?", (self._next_seq - 1, self._session_id)
                )
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            self._write_failed(exc)
            if self._stop.is_set():
                return
            self._stop.wait(0.2)
            return
        self._write_succeeded()

    def _write_failed(self, exc: sqlite3.Error) -> None:
        self.stats.write_errors += 1
        self.metrics.write_errors.add(1)
        message = f"{type(exc).__name__}: {exc}"
        now = time.monotonic()
        if self._healthy:
            self._healthy = False
            self._unhealthy_since = now
            self._last_reminder = now
            self._last_error = message
            consequence = (
                "requests are refused with 503 until it recovers (fail_closed)"
                if self._fail_closed
                else "requests go on; records are kept for retry, then dropped when the queue is full"
            )
            logger.error("AUDIT STORE UNWRITABLE: %s (%s); %s", self.settings.path, message, consequence)
        else:
            self._last_error = message
            if now - self._last_reminder >= _REMINDER_SECONDS:
                self._last_reminder = now
                logger.error(
                    "audit store %s still unwritable after %.0f s (%s); %d records waiting",
                    self.settings.path, now - self._unhealthy_since, message, self.queue_depth,
                )

    def _write_succeeded(self) -> None:
        if not self._healthy:
            logger.warning(
                "audit store %s writable again after %.1f s",
                self.settings.path, time.monotonic() - self._unhealthy_since,
            )
            self._last_error = None
            self._healthy = True

    def _give_up(self, batch: list[_Item]) -> None:
        remaining = len(batch) + len(self._queue)
        self._queue.clear()
        self._inflight = 0
        self.stats.lost += remaining
        self.metrics.records_lost.add(remaining)
        logger.error(
            "AUDIT RECORDS LOST: closing with the store %s unwritable (%s); %d records were never stored",
            self.settings.path, self._last_error, remaining,
        )

    def _finish(self) -> None:
        conn = self._conn
        if conn is None:
            return
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                if self._healthy and self._checkpoint_due(self._head_seq):
                    # the head was committed by an earlier batch: this checkpoint travels as a span of its own
                    self._final_batch = True
                    if self._checkpoint(conn, self._head_seq, self._head_decision, self._head.hex(), 0):
                        self.checkpoints += 1
                conn.execute(
                    "UPDATE sessions SET closed_us = ?, last_seq = ? WHERE id = ?",
                    (time_to_us(time.time()), self._next_seq - 1, self._session_id),
                )
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            conn.execute("PRAGMA optimize")
        except sqlite3.Error as exc:
            logger.error("could not mark the audit session closed in %s: %s", self.settings.path, exc)
        finally:
            conn.close()
            self._conn = None
            self._healthy = False


def _mark_refused(rec: DecisionRecord) -> None:
    """The request is answered 503 because its record cannot be stored; the record says so. If the
    upstream had already answered (the gateway records after forwarding), its status is kept in
    ``extra["upstream_status"]``: the upstream performed the request even though the client got 503."""
    if rec.upstream_ms and rec.status and rec.status != 503:
        rec.extra["upstream_status"] = str(rec.status)
    rec.status = 503
    rec.reason = "audit_unavailable"


def _settle_futures(outcomes: list[tuple[asyncio.Future[None], BaseException | None]]) -> None:
    for future, error in outcomes:
        if future.done():
            continue
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
