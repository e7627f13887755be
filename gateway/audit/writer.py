"""The audit writer thread: batches, group commits, retries.

One thread per gateway process owns the store's write connection (``store.py``). It takes what the
event loop queued (``channel.py``) and, in async mode, first waits ``linger_seconds`` for more, so
one commit carries many records and the GIL is handed over per batch, not per record (durable mode
never waits: its callers are blocked meanwhile). It turns the records into rows (``rows.py``: the
JSON that repeats is encoded once) and writes the batch in one transaction.

Failures: a failing batch is kept and retried with back-off while ``healthy`` is False (``log.py``
says what the loop does meanwhile); a record rejected by a constraint is logged and linked around; a
record that cannot be converted is logged and skipped. Either leaves a gap in the sequence that
``verify`` shows. Closing commits what is queued (giving up after ``close_timeout_seconds``) and
marks the session closed, with a last signed checkpoint.
"""

from __future__ import annotations

import logging
import random
import sqlite3
import time
from collections.abc import Callable
from typing import Any

from gateway.audit.channel import Channel, Item, mark_refused, settle_futures
from gateway.audit.errors import AuditUnavailable
from gateway.audit.record import DecisionRecord
from gateway.audit.store import Store

logger = logging.getLogger("gateway.audit")

_REMINDER_SECONDS = 10.0


class Writer:
    """The writer thread's work; ``run`` is the thread's body. Bound to one ``Channel``."""

    def __init__(
        self, channel: Channel, *, prepare: Callable[[DecisionRecord], None] | None = None
    ) -> None:
        self.channel = channel
        self.settings = channel.settings
        self._prepare = prepare
        self._batch_size = self.settings.batch_size
        self._linger = self.settings.linger_seconds
        self.store = Store(channel)
        self._unhealthy_since = 0.0
        self._last_reminder = 0.0
        #: called after each committed batch (the OTLP outbox's notify)
        self.on_commit: Callable[[], None] | None = None

    # -- the thread ----------------------------------------------------------------------------------

    def run(self) -> None:
        batch: list[Item] | None = None
        try:
            while True:
                batch = self._take_batch()
                if batch is None:
                    break
                self._commit(batch)
                batch = None
        except Exception:
            logger.exception("AUDIT WRITER CRASHED: records still queued are lost; the gateway needs a restart")
            self.channel.healthy = False
            self.channel.last_error = "the audit writer crashed"
            self._abandon_queue(batch or [])
        finally:
            self.store.finish()

    def _abandon_queue(self, batch: list[Item]) -> None:
        """After a writer crash: nothing will be written any more; waiting durable callers must not hang."""
        channel = self.channel
        channel.accepting = False
        waiting = [*batch, *list(channel.queue)]
        channel.queue.clear()
        channel.inflight = 0
        channel.stats.lost += len(waiting)
        channel.metrics.records_lost.add(len(waiting))
        outcome = AuditUnavailable(channel.unavailable_message()) if channel.fail_closed else None
        channel.call_in_loop(settle_futures, [(future, outcome) for _, future in waiting if future is not None])
        channel.call_in_loop(channel.release_space_waiters)

    def _take_batch(self) -> list[Item] | None:
        channel = self.channel
        queue = channel.queue
        while not queue:
            if channel.stop.is_set():
                return None
            if not channel.healthy:
                self._probe()
                continue
            channel.wake.clear()
            if queue or channel.stop.is_set():
                continue
            channel.wake.wait(1.0)
        if not channel.durable and self._linger and len(queue) < channel.batch_threshold:
            # gather a group commit: until a batch is full or the linger is over; at once on close()
            channel.full.clear()
            if len(queue) < channel.batch_threshold and not channel.stop.is_set():
                channel.full.wait(self._linger)
        count = min(len(queue), self._batch_size)
        channel.inflight = count
        batch = [queue.popleft() for _ in range(count)]
        self.store.final_batch = channel.stop.is_set() and not queue  # closing: this batch carries a checkpoint
        if channel.space_waiters:
            channel.call_in_loop(channel.release_space_waiters)
        return batch

    def _convert(self, batch: list[Item]) -> tuple[list[Item], list[tuple[Any, ...]], list[bytes], list[list[str]]]:
        """The batch's records that convert, with their rows, canonical forms and term keys."""
        rows: list[tuple[Any, ...]] = []
        forms: list[bytes] = []
        terms: list[list[str]] = []
        convertible: list[Item] = []
        prepare, store = self._prepare, self.store
        for item in batch:
            rec = item[0]
            if prepare is not None:
                try:
                    prepare(rec)
                except Exception:  # never lose the record for its extras
                    logger.exception("preparing audit record %s failed; written without it", rec.decision_id)
            try:
                row, form = store.row(rec)
                keys = store.terms(rec)
            except Exception as exc:  # a malformed record (a caller's bug) must not stop the writer
                self._reject_malformed(item, exc)
                continue
            rows.append(row)
            forms.append(form)
            terms.append(keys)
            convertible.append(item)
        return convertible, rows, forms, terms

    def _commit(self, batch: list[Item]) -> None:
        channel = self.channel
        batch, rows, forms, terms = self._convert(batch)
        if not batch:
            channel.inflight = 0
            return
        attempt = 0
        while True:
            try:
                rejected = self.store.write(rows, forms, terms, batch)
            except sqlite3.Error as exc:
                first_failure = channel.healthy
                self._write_failed(exc)
                if first_failure:
                    self._release_durable_callers(batch)
                    # the rows were built before the records became 503s (which still convert: they did)
                    rows, forms = [], []
                    for rec, _ in batch:
                        row, form = self.store.row(rec)
                        rows.append(row)
                        forms.append(form)
                if not self._pause(attempt):
                    self._give_up(batch)
                    return
                attempt += 1
                continue
            break
        self._write_succeeded()
        channel.inflight = 0
        self._settle(batch, rejected)
        channel.stats.committed += len(batch) - len(rejected)
        channel.stats.batches += 1
        channel.metrics.record_batch(rec for index, (rec, _) in enumerate(batch) if index not in rejected)
        if self.on_commit is not None:
            self.on_commit()

    def _reject_malformed(self, item: Item, exc: Exception) -> None:
        rec, future = item
        channel = self.channel
        channel.stats.rejected += 1
        logger.error(
            "audit record %s (gateway %s, sequence %d) cannot be stored, it is malformed: %s: %s",
            rec.decision_id, rec.gateway_id, rec.sequence, type(exc).__name__, exc,
        )
        if future is not None:
            error = AuditUnavailable("the audit record is malformed") if channel.fail_closed else None
            channel.call_in_loop(settle_futures, [(future, error)])

    # -- settling and failures -----------------------------------------------------------------------

    def _release_durable_callers(self, batch: list[Item]) -> None:
        """The store just failed: durable callers must not hang until it recovers.

        fail_closed: their requests get 503 and their records (kept for retry) say so. Otherwise they
        are released as if committed. Either way the records stay queued and are written on recovery.
        """
        channel = self.channel
        if not channel.durable:
            return
        waiting = [item for item in (*batch, *list(channel.queue)) if item[1] is not None]
        if channel.fail_closed:
            error = AuditUnavailable(channel.unavailable_message())
            for rec, _ in waiting:
                mark_refused(rec)
            channel.stats.refused += len(waiting)
            channel.metrics.records_refused.add(len(waiting))
            channel.call_in_loop(settle_futures, [(future, error) for _, future in waiting])
        else:
            channel.call_in_loop(settle_futures, [(future, None) for _, future in waiting])

    def _settle(self, batch: list[Item], rejected: set[int]) -> None:
        channel = self.channel
        if not channel.durable:
            return
        error = AuditUnavailable("the audit store rejected the record") if channel.fail_closed else None
        outcomes = [
            (future, error if index in rejected else None)
            for index, (_, future) in enumerate(batch)
            if future is not None
        ]
        channel.call_in_loop(settle_futures, outcomes)

    def _pause(self, attempt: int) -> bool:
        """Back off before retrying a failed write. False = closing and out of time: give up."""
        delay = min(1.0, 0.02 * 2 ** min(attempt, 10)) * random.uniform(0.8, 1.2)
        stop = self.channel.stop
        if not stop.is_set():
            stop.wait(delay)
            return True
        remaining = self.channel.close_deadline - time.monotonic()
        if remaining <= 0:
            return False
        time.sleep(min(delay, remaining))
        return True

    def _probe(self) -> None:
        """While unhealthy with nothing to retry, test the store so that health can come back."""
        try:
            self.store.probe()
        except sqlite3.Error as exc:
            self._write_failed(exc)
            if self.channel.stop.is_set():
                return
            self.channel.stop.wait(0.2)
            return
        self._write_succeeded()

    def _write_failed(self, exc: sqlite3.Error) -> None:
        channel = self.channel
        channel.stats.write_errors += 1
        channel.metrics.write_errors.add(1)
        message = f"{type(exc).__name__}: {exc}"
        now = time.monotonic()
        if channel.healthy:
            channel.healthy = False
            self._unhealthy_since = now
            self._last_reminder = now
            channel.last_error = message
            consequence = (
                "requests are refused with 503 until it recovers (fail_closed)"
                if channel.fail_closed
                else "requests go on; records are kept for retry, then dropped when the queue is full"
            )
            logger.error("AUDIT STORE UNWRITABLE: %s (%s); %s", self.settings.path, message, consequence)
        else:
            channel.last_error = message
            if now - self._last_reminder >= _REMINDER_SECONDS:
                self._last_reminder = now
                logger.error(
                    "audit store %s still unwritable after %.0f s (%s); %d records waiting",
                    self.settings.path, now - self._unhealthy_since, message, channel.depth,
                )

    def _write_succeeded(self) -> None:
        channel = self.channel
        if not channel.healthy:
            logger.warning(
                "audit store %s writable again after %.1f s",
                self.settings.path, time.monotonic() - self._unhealthy_since,
            )
            channel.last_error = None
            channel.healthy = True

    def _give_up(self, batch: list[Item]) -> None:
        channel = self.channel
        remaining = len(batch) + len(channel.queue)
        channel.queue.clear()
        channel.inflight = 0
        channel.stats.lost += remaining
        channel.metrics.records_lost.add(remaining)
        logger.error(
            "AUDIT RECORDS LOST: closing with the store %s unwritable (%s); %d records were never stored",
            self.settings.path, channel.last_error, remaining,
        )
