"""The OTLP outbox: ``authz.decision`` spans built from the store, with a cursor kept in the store.

One thread per gateway process reads committed records after the cursor (in commit order, the
``decisions.id`` order), builds their spans and hands them to the span exporter (OTLP/HTTP). The
cursor advances, in the same store, only after the exporter reported success for the whole batch.
A collector outage therefore delays spans and loses none: the batch is retried with exponential
back-off (capped at ``export_max_backoff_seconds``, attempts never stop while the gateway runs), and
after a restart the export resumes from the stored cursor.

Delivery is at least once: if the process dies between the collector's success and the cursor
commit, or a collector accepts a batch but its answer is lost, that batch is sent again with the same
span ids (the ClickHouse queries count distinct span ids for that reason).

Several gateway processes may share one store; a lease in ``export_state`` (renewed each batch,
taken over when it expires) lets exactly one of them export at a time.
"""

from __future__ import annotations

import json
import logging
import random
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from gateway.audit.checkpoints import has_evidence_schema
from gateway.audit.schema import StoreError, connect_maintenance, record_from_row
from gateway.audit.settings import AuditSettings
from gateway.audit.spans import build_span, checkpoint_event, checkpoint_span, span_resource

logger = logging.getLogger("gateway.audit.export")

CURSOR_NAME = "otlp"
CHECKPOINT_CURSOR = "otlp.checkpoints"  # checkpoints that travel as spans of their own (ref = 0)


def otlp_span_exporter(settings: AuditSettings) -> SpanExporter:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(endpoint=settings.traces_url, timeout=settings.otlp_timeout_seconds)


class OutboxExporter:
    """Exports the store's records as spans, from the stored cursor on, in its own thread."""

    def __init__(
        self,
        settings: AuditSettings,
        span_exporter: SpanExporter,
        *,
        owner: str = "",
        on_exported: Callable[[int], None] | None = None,
        on_failure: Callable[[], None] | None = None,
    ) -> None:
        self._settings = settings
        self._path = settings.path
        self._span_exporter = span_exporter
        self._owner = f"{owner or 'gateway'}:{uuid.uuid4().hex[:12]}"
        self._on_exported = on_exported
        self._on_failure = on_failure
        self._interval = max(settings.export_interval_seconds, 0.01)
        self._batch_size = settings.export_batch_size
        self._max_backoff = max(settings.export_max_backoff_seconds, 0.05)
        self._lease_us = int(max(60.0, 2 * settings.otlp_timeout_seconds + 3 * self._interval) * 1_000_000)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: sqlite3.Connection | None = None
        self._resources: dict[str, Resource] = {}
        self._attempt = 0
        self._last_failure_log = 0.0
        self._final_deadline = 0.0
        self._lease_until_us = 0
        self.cursor = 0
        self.exported = 0
        self.failures = 0
        self.lease_held = False
        #: Age in seconds of the oldest record not yet exported; 0 = caught up; None = not known yet.
        self.lag_seconds: float | None = None
        self.last_error: str | None = None

    # -- life cycle ----------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="audit-otlp-export", daemon=True)
        self._thread.start()

    def notify(self) -> None:
        """New records were committed (called by the writer after each group commit)."""
        if not self._wake.is_set():
            self._wake.set()

    def close(self, timeout: float = 5.0) -> None:
        """Export what is committed (one attempt per batch, within ``timeout``), then stop."""
        self._final_deadline = time.monotonic() + timeout
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout + 1.0)
        else:
            self._release_lease()  # used from the calling thread (export_pending)
        try:
            self._span_exporter.shutdown()
        except Exception:  # the exporter's own shutdown must not break ours
            logger.exception("OTLP span exporter shutdown failed")
        if self._conn is not None and (self._thread is None or not self._thread.is_alive()):
            self._conn.close()
            self._conn = None

    def export_pending(self, timeout: float) -> str:
        """Export what is committed now, in the calling thread (``gateway audit export --once``).

        Returns ``caught_up``, ``failed`` (the collector did not take everything; the rest stays
        pending) or ``leased_elsewhere`` (another process holds the export lease).
        """
        deadline = time.monotonic() + timeout
        if not self._drain(deadline=deadline):
            return "failed"
        return "caught_up" if self.lease_held else "leased_elsewhere"

    # -- the loop ------------------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._interval)
            self._wake.clear()
            if self._stop.is_set():
                break
            if not self._drain(deadline=None) and not self._stop.is_set():
                self._stop.wait(self._backoff())
        self._drain(deadline=self._final_deadline)
        self._release_lease()

    def _release_lease(self) -> None:
        """Let another process (or this gateway after a restart) take over at once."""
        if not self.lease_held or self._conn is None:
            return
        try:
            self._conn.execute(
                "UPDATE export_state SET lease_until_us = 0 WHERE name = ? AND owner = ?", (CURSOR_NAME, self._owner)
            )
        except sqlite3.Error as exc:
            logger.warning("could not release the OTLP export lease: %s", exc)
        self.lease_held = False

    def _backoff(self) -> float:
        delay: float = min(self._max_backoff, 0.25 * 2.0 ** min(self._attempt, 16))
        return delay * random.uniform(0.8, 1.2)

    def _drain(self, deadline: float | None) -> bool:
        """Export batches until caught up. False = an attempt failed (back off before the next)."""
        try:
            while True:
                if deadline is not None and time.monotonic() > deadline:
                    return False
                if not self._take_lease():
                    return True
                exported = self.export_batch()
                if exported is None:
                    return False
                if exported == 0:
                    return True
        except (sqlite3.Error, StoreError) as exc:
            self._failed(f"audit store: {exc}")
            return False

    def export_batch(self) -> int | None:
        """Export the next batch after the cursor: the count exported, 0 = nothing pending, None = failed.

        The caller must hold the lease (``_take_lease``).
        """
        conn = self._connection()
        rows = conn.execute(
            "SELECT * FROM decisions WHERE id > ? ORDER BY id LIMIT ?", (self.cursor, self._batch_size)
        ).fetchall()
        if not rows:
            self.lag_seconds = 0.0
            return self._export_checkpoint_spans(conn)
        self.lag_seconds = max(0.0, time.time() - rows[0]["time_us"] / 1_000_000)
        events = self._checkpoint_events(conn, int(rows[0]["id"]), int(rows[-1]["id"]))
        spans = [
            build_span(record_from_row(row), self._resource(row["gateway_id"]), events.get(int(row["id"]), ()))
            for row in rows
        ]
        try:
            result = self._span_exporter.export(spans)
        except Exception as exc:  # an exporter bug must not kill the outbox
            logger.exception("span exporter raised")
            self._failed(f"exporter raised {type(exc).__name__}: {exc}")
            return None
        if result is not SpanExportResult.SUCCESS:
            self._failed(f"collector did not accept {len(spans)} spans ({self._settings.traces_url or 'exporter'})")
            return None
        last_id = int(rows[-1]["id"])
        if not self._advance(last_id, len(rows)):
            return 0
        if self._attempt:
            logger.warning("OTLP export resumed after %d failed attempts", self._attempt)
        self._attempt = 0
        self.last_error = None
        self.exported += len(rows)
        if self._on_exported is not None:
            self._on_exported(len(rows))
        return len(rows)

    def _jwks(self, conn: sqlite3.Connection) -> dict[str, dict[str, Any]]:
        return {str(r[0]): json.loads(r[1]) for r in conn.execute("SELECT kid, jwk FROM audit_keys")}

    def _checkpoint_events(self, conn: sqlite3.Connection, first_id: int, last_id: int) -> dict[int, list[Event]]:
        """Checkpoints signed in the commit of one of these records: events of that record's span."""
        if not has_evidence_schema(conn):
            return {}
        found = conn.execute(
            "SELECT * FROM checkpoints WHERE ref BETWEEN ? AND ? AND ref > 0", (first_id, last_id)
        ).fetchall()
        if not found:
            return {}
        jwks = self._jwks(conn)
        events: dict[int, list[Event]] = {}
        for row in found:
            events.setdefault(int(row["ref"]), []).append(checkpoint_event(row, jwks.get(str(row["kid"]), {})))
        return events

    def _export_checkpoint_spans(self, conn: sqlite3.Connection) -> int | None:
        """Purge markers and close-time checkpoints, after their own cursor; 0 when none is pending."""
        if not has_evidence_schema(conn):
            return 0
        conn.execute(
            "INSERT OR IGNORE INTO export_state (name, cursor, owner, lease_until_us, exported, updated_us) "
            "VALUES (?, 0, '', 0, 0, 0)", (CHECKPOINT_CURSOR,),
        )
        cursor = int(conn.execute("SELECT cursor FROM export_state WHERE name = ?", (CHECKPOINT_CURSOR,)).fetchone()[0])
        rows = conn.execute(
            "SELECT * FROM checkpoints WHERE id > ? AND ref = 0 ORDER BY id LIMIT ?", (cursor, self._batch_size)
        ).fetchall()
        if not rows:
            return 0
        jwks = self._jwks(conn)
        spans = [checkpoint_span(row, jwks.get(str(row["kid"]), {}), self._resource(str(row["gateway_id"])))
                 for row in rows]
        try:
            result = self._span_exporter.export(spans)
        except Exception as exc:
            logger.exception("span exporter raised")
            self._failed(f"exporter raised {type(exc).__name__}: {exc}")
            return None
        if result is not SpanExportResult.SUCCESS:
            self._failed(f"collector did not accept {len(spans)} checkpoint spans")
            return None
        conn.execute("UPDATE export_state SET cursor = ?, exported = exported + ?, updated_us = ? WHERE name = ?",
                     (int(rows[-1]["id"]), len(rows), time.time_ns() // 1000, CHECKPOINT_CURSOR))
        return len(rows)

    def _failed(self, message: str) -> None:
        self.failures += 1
        self._attempt += 1
        self.last_error = message
        if self._on_failure is not None:
            self._on_failure()
        now = time.monotonic()
        if now - self._last_failure_log >= 30.0 or self._attempt == 1:
            self._last_failure_log = now
            logger.warning("OTLP export failed (attempt %d, records kept, will retry): %s", self._attempt, message)

    # -- the store -----------------------------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = connect_maintenance(self._path, self._settings.busy_timeout_seconds)
        return self._conn

    def _resource(self, gateway_id: str) -> Resource:
        resource = self._resources.get(gateway_id)
        if resource is None:
            resource = self._resources[gateway_id] = span_resource(self._settings.service_name, gateway_id)
        return resource

    def _take_lease(self) -> bool:
        """Take or renew the export lease; loads the stored cursor. False = another process exports.

        Each step is one autocommit statement, so the store's write lock is held for microseconds
        (the gateway's writer waits for it), and a held lease is renewed only past half its life.
        """
        conn = self._connection()
        now_us = time.time_ns() // 1000
        if self.lease_held and self._lease_until_us - now_us > self._lease_us // 2:
            return True
        if not self.lease_held:
            conn.execute(
                "INSERT OR IGNORE INTO export_state (name, cursor, owner, lease_until_us, exported, updated_us) "
                "VALUES (?, 0, '', 0, 0, ?)",
                (CURSOR_NAME, now_us),
            )
        taken = conn.execute(
            "UPDATE export_state SET owner = :me, lease_until_us = :until "
            "WHERE name = :name AND (owner = :me OR lease_until_us < :now)",
            {"me": self._owner, "until": now_us + self._lease_us, "name": CURSOR_NAME, "now": now_us},
        ).rowcount
        if taken != 1:
            self.lease_held = False
            self.lag_seconds = None  # the process holding the lease reports it
            return False
        if not self.lease_held:
            row = conn.execute("SELECT cursor FROM export_state WHERE name = ?", (CURSOR_NAME,)).fetchone()
            self.cursor = int(row["cursor"])
        self.lease_held = True
        self._lease_until_us = now_us + self._lease_us
        return True

    def _advance(self, last_id: int, count: int) -> bool:
        now_us = time.time_ns() // 1000
        changed = self._connection().execute(
            "UPDATE export_state SET cursor = ?, exported = exported + ?, updated_us = ?, lease_until_us = ? "
            "WHERE name = ? AND owner = ?",
            (last_id, count, now_us, now_us + self._lease_us, CURSOR_NAME, self._owner),
        ).rowcount
        if changed != 1:
            logger.warning("OTLP export lease lost to another process; it will export from its cursor")
            self.lease_held = False
            return False
        self.cursor = last_id
        self._lease_until_us = now_us + self._lease_us
        return True
