"""What the request path needs of the audit trail (``AuditSink``), and an in-memory one for tests.

``Gateway`` (``gateway/app.py``) depends on this protocol, not on ``AuditLog``: it calls
``record()`` once per request before the response starts, reads ``healthy`` and ``last_error`` for
``/readyz`` and the fail-closed check, and ``start()``/``close()`` with its lifespan. ``AuditLog``
(``log.py``) is the production sink. ``MemorySink`` keeps the records in a list, numbered as
``AuditLog`` numbers them, and can be made to fail like an unwritable store, so the request path can
be tested without SQLite (and a test can say what the gateway recorded, field by field).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from gateway.audit.errors import AuditUnavailable
from gateway.audit.record import DecisionRecord
from gateway.audit.tracecontext import new_span_id, new_trace_id


@runtime_checkable
class AuditSink(Protocol):
    @property
    def healthy(self) -> bool:
        """False while records cannot be stored (the gateway answers 503 with fail_closed)."""
        ...

    @property
    def last_error(self) -> str | None:
        """Why records cannot be stored, while they cannot."""
        ...

    async def record(self, rec: DecisionRecord) -> None:
        """Accept one request's record; raises ``AuditUnavailable`` when it cannot be stored."""
        ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...


class MemorySink:
    """An ``AuditSink`` that keeps every accepted record in ``records``. ``fail(reason)`` makes it
    behave like a fail-closed store that cannot be written (``record()`` raises, ``healthy`` is
    False) until ``recover()``."""

    def __init__(self, gateway_id: str = "memory") -> None:
        self.gateway_id = gateway_id
        self.records: list[DecisionRecord] = []
        self.refused: list[DecisionRecord] = []
        self.started = False
        self.closed = False
        self._error: str | None = None
        self._next_seq = 1

    @property
    def healthy(self) -> bool:
        return self.started and not self.closed and self._error is None

    @property
    def last_error(self) -> str | None:
        return self._error

    def fail(self, reason: str) -> None:
        self._error = reason

    def recover(self) -> None:
        self._error = None

    async def start(self) -> None:
        self.started = True

    async def close(self) -> None:
        self.closed = True

    async def record(self, rec: DecisionRecord) -> None:
        if not self.started or self.closed:
            raise AuditUnavailable("the audit log is not running")
        if self._error is not None:
            self.refused.append(rec)
            raise AuditUnavailable(f"the audit store cannot be written: {self._error}")
        rec.sequence, self._next_seq = self._next_seq, self._next_seq + 1
        rec.gateway_id = self.gateway_id
        rec.span_id = rec.span_id or new_span_id()
        rec.trace_id = rec.trace_id or new_trace_id()
        self.records.append(rec)

    def by_id(self, decision_id: str) -> DecisionRecord:
        """The one record with this decision id (raises ``LookupError`` if there is none or several)."""
        found = [r for r in self.records if r.decision_id == decision_id]
        if len(found) != 1:
            raise LookupError(f"{len(found)} records with decision id {decision_id!r}")
        return found[0]
