"""What the event loop (``log.py``) and the writer thread (``writer.py``) share, and nothing else.

The queue is a ``collections.deque``: ``append`` on the loop and ``popleft`` in the writer are atomic
under the GIL, so neither side takes a lock per record. The writer sleeps on ``wake`` (set by the
loop only while it is clear, so an idle writer costs one ``set`` per batch, not per record) and on
``stop``, and lingers for more on ``full``; every result for the loop (durable futures, producers
waiting for room) goes through ``call_in_loop``, one ``call_soon_threadsafe`` per batch. Health
(``healthy``, ``last_error``) is written by the writer and read by the loop: plain attribute
stores, so a reader sees the old or the new value, never a torn one.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any

from gateway.audit.metrics import AuditMetrics
from gateway.audit.record import DecisionRecord
from gateway.audit.settings import AuditSettings

Item = tuple[DecisionRecord, "asyncio.Future[None] | None"]


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


class Channel:
    """The queue between the loop and the writer, the store's health, and the way back to the loop."""

    def __init__(self, settings: AuditSettings, gateway_id: str, metrics: AuditMetrics) -> None:
        self.settings = settings
        self.gateway_id = gateway_id
        self.metrics = metrics
        self.stats = AuditStats()
        self.durable = settings.durable
        self.fail_closed = settings.fail_closed
        self.queue_size = settings.queue_size
        self.queue: deque[Item] = deque()
        self.inflight = 0  # records taken by the writer and not yet committed
        self.wake = threading.Event()
        self.stop = threading.Event()
        #: async mode: a full batch is waiting; ends the writer's linger early (set on the loop only
        #: when the queue reaches ``batch_threshold``, so not once per record)
        self.full = threading.Event()
        self.batch_threshold = min(settings.batch_size, settings.queue_size)
        self.space_waiters: deque[asyncio.Future[None]] = deque()  # the loop's only
        self.next_seq = 1  # the loop numbers records; the writer sets where a session continues
        self.accepting = False
        self.healthy = False
        self.last_error: str | None = None
        self.close_deadline = 0.0
        self.loop: asyncio.AbstractEventLoop | None = None

    @property
    def depth(self) -> int:
        return len(self.queue) + self.inflight

    def unavailable_message(self) -> str:
        return f"the audit store cannot be written: {self.last_error or 'unknown error'}"

    def call_in_loop(self, callback: Any, *args: Any) -> None:
        loop = self.loop
        if loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting any more
            loop.call_soon_threadsafe(callback, *args)

    def release_space_waiters(self) -> None:
        """On the loop: wake as many waiting producers as there is room for (all of them when
        closing or unhealthy)."""
        waiters = self.space_waiters
        everyone = not self.accepting or not self.healthy
        room = self.queue_size - len(self.queue)
        while waiters and (everyone or room > 0):
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                room -= 1


def mark_refused(rec: DecisionRecord) -> None:
    """The request is answered 503 because its record cannot be stored; the record says so. If the
    upstream had already answered (the gateway records after forwarding), its status is kept in
    ``extra["upstream_status"]``: the upstream performed the request even though the client got 503."""
    if rec.upstream_ms and rec.status and rec.status != 503:
        rec.extra["upstream_status"] = str(rec.status)
    rec.status = 503
    rec.reason = "audit_unavailable"


def settle_futures(outcomes: list[tuple[asyncio.Future[None], BaseException | None]]) -> None:
    """On the loop: resolve durable callers' futures (None = committed, else the error to raise)."""
    for future, error in outcomes:
        if future.done():
            continue
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)
