"""``AuditLog``: the event-loop side of the audit trail (queue, backpressure, health, ``record()``).

The writer thread that turns the queue into group commits is ``writer.py``; what the two share is
``channel.py``.

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
import socket
import threading
import time
from collections.abc import Callable

from opentelemetry.metrics import MeterProvider
from opentelemetry.sdk.trace.export import SpanExporter

from gateway.audit.channel import AuditStats, Channel, mark_refused
from gateway.audit.errors import AuditUnavailable
from gateway.audit.export import OutboxExporter, otlp_span_exporter
from gateway.audit.metrics import AuditMetrics
from gateway.audit.record import DecisionRecord
from gateway.audit.settings import AuditSettings
from gateway.audit.tracecontext import new_span_id, new_trace_id
from gateway.audit.writer import Writer

__all__ = ["AuditLog", "AuditStats", "AuditUnavailable"]

logger = logging.getLogger("gateway.audit")


class AuditLog:
    """The audit trail of one gateway process (an ``AuditSink``). Bound to the event loop that calls
    ``start()``."""

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
        self.gateway_id = settings.gateway_id or f"{socket.gethostname()}-{os.getpid()}"
        self.metrics = AuditMetrics(
            meter_provider,
            queue_depth=lambda: self.queue_depth,
            healthy=lambda: self._channel.healthy,
            export_lag=lambda: self.exporter.lag_seconds if self.exporter is not None else None,
        )
        self._channel = channel = Channel(settings, self.gateway_id, self.metrics)
        self.stats = channel.stats
        self._writer = Writer(channel, prepare=prepare)
        self._queue = channel.queue
        self._queue_size = settings.queue_size
        self._durable = settings.durable
        self._fail_closed = settings.fail_closed
        self._wake = channel.wake
        self._full = channel.full
        self._batch_threshold = channel.batch_threshold
        self._started = False
        self._last_loss_log = 0.0
        self._thread: threading.Thread | None = None
        self._span_exporter = span_exporter
        self.exporter: OutboxExporter | None = None

    # -- state ---------------------------------------------------------------------------------------

    @property
    def healthy(self) -> bool:
        """True while the last write to the store succeeded (and the log is running)."""
        return self._channel.healthy and self._channel.accepting

    @property
    def last_error(self) -> str | None:
        """Why the store cannot be written, while it cannot; None when healthy."""
        return self._channel.last_error

    @property
    def queue_depth(self) -> int:
        """Records accepted and not yet committed (including the batch being written)."""
        return self._channel.depth

    @property
    def mode(self) -> str:
        return self.settings.mode

    @property
    def checkpoints(self) -> int:
        """Signed checkpoints written since ``start()``."""
        return self._writer.store.checkpoints

    # -- life cycle ----------------------------------------------------------------------------------

    async def start(self) -> None:
        """Open (or create) the store, begin a writer session, start the writer and the exporter.

        Raises ``AuditUnavailable`` when the store cannot be opened: a gateway must not run without
        knowing where its sequence continues.
        """
        if self._started:
            raise RuntimeError("AuditLog.start() called twice")
        self._started = True
        channel = self._channel
        channel.loop = asyncio.get_running_loop()
        await asyncio.to_thread(self._writer.store.open)
        channel.healthy = True
        channel.accepting = True
        self._thread = threading.Thread(target=self._writer.run, name="audit-writer", daemon=True)
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
            self._writer.on_commit = self.exporter.notify
            self.exporter.start()

    async def close(self) -> None:
        """Stop accepting, commit everything queued (giving up after ``close_timeout_seconds`` if the
        store stays unwritable), mark the session closed, then let the exporter send what it can."""
        if not self._started or self._thread is None:
            return
        channel = self._channel
        channel.accepting = False
        channel.close_deadline = time.monotonic() + self.settings.close_timeout_seconds
        channel.stop.set()
        channel.wake.set()
        channel.full.set()
        await asyncio.to_thread(self._thread.join, self.settings.close_timeout_seconds + 5.0)
        channel.release_space_waiters()
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
        channel = self._channel
        if not channel.accepting:
            self.stats.refused += 1
            raise AuditUnavailable("the audit log is not running")
        if not channel.healthy:
            self._record_unhealthy(rec)
            return
        queue = self._queue
        if len(queue) >= self._queue_size and not await self._wait_for_space(rec):
            return
        self._number(rec)
        if self._durable:
            future: asyncio.Future[None] = channel.loop.create_future()  # type: ignore[union-attr]
            queue.append((rec, future))
            if not self._wake.is_set():
                self._wake.set()
            await future
            return
        queue.append((rec, None))
        if not self._wake.is_set():
            self._wake.set()
        elif len(queue) >= self._batch_threshold and not self._full.is_set():
            self._full.set()

    def _number(self, rec: DecisionRecord) -> None:
        channel = self._channel
        seq = channel.next_seq
        channel.next_seq = seq + 1
        rec.sequence = seq
        rec.gateway_id = self.gateway_id
        if not rec.span_id:
            rec.span_id = new_span_id()
        if not rec.trace_id:
            rec.trace_id = new_trace_id()

    def _record_unhealthy(self, rec: DecisionRecord) -> None:
        """The store cannot be written. fail_closed: keep the record (as the 503 it becomes) for when
        the store recovers, if there is room, and raise. Otherwise keep it if there is room, else drop."""
        if self._fail_closed:
            mark_refused(rec)
            if len(self._queue) < self._queue_size:
                self._number(rec)
                self._queue.append((rec, None))
            self.stats.refused += 1
            self.metrics.records_refused.add(1)
            raise AuditUnavailable(self._channel.unavailable_message())
        if len(self._queue) < self._queue_size:
            self._number(rec)
            self._queue.append((rec, None))
        else:
            self._drop()

    async def _wait_for_space(self, rec: DecisionRecord) -> bool:
        """Wait until the queue has room. False = the record was dealt with otherwise (store down)."""
        channel = self._channel
        loop = channel.loop
        assert loop is not None
        while len(self._queue) >= self._queue_size:
            if not channel.accepting:
                self.stats.refused += 1
                raise AuditUnavailable("the audit log is closing")
            if not channel.healthy:
                self._record_unhealthy(rec)
                return False
            self.stats.full_waits += 1
            waiter = loop.create_future()
            channel.space_waiters.append(waiter)
            self._wake.set()
            if len(self._queue) < self._queue_size:
                continue  # the writer made room between the check and the append
            # re-check health and room at least every 0.5 s; the writer wakes waiters after each batch
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(waiter, timeout=0.5)
        return True

    def _drop(self) -> None:
        # The sequence number is spent on purpose: the loss shows as a gap in ``verify``.
        self._channel.next_seq += 1
        self.stats.lost += 1
        self.metrics.records_lost.add(1)
        now = time.monotonic()
        if now - self._last_loss_log >= 5.0:
            self._last_loss_log = now
            logger.error(
                "AUDIT RECORDS LOST: %d so far; the store %s cannot be written (%s) and fail_closed is off",
                self.stats.lost, self.settings.path, self._channel.last_error,
            )
