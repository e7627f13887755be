"""Shared helpers for the audit tests: records, running logs, reading stores with a second connection."""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from gateway.audit.ids import uuid7
from gateway.audit.log import AuditLog
from gateway.audit.record import DecisionRecord
from gateway.audit.settings import AuditSettings
from gateway.audit.tracecontext import new_span_id, new_trace_id

TENANT = "7b5d2c1e-0f3a-4b6c-9d8e-1a2b3c4d5e6f"
PRINCIPAL = "0c9f0a54-2f0e-4e0b-a5d6-3f1c2b7e9a10"


def make_record(**fields: Any) -> DecisionRecord:
    values: dict[str, Any] = {
        "decision_id": uuid7(),
        "time": time.time(),
        "method": "GET",
        "path": f"/tenants/{TENANT}/contacts/c-1",
        "trace_id": new_trace_id(),
        "span_id": new_span_id(),
        "route": "/tenants/{tid}/contacts/{id}",
        "tenant": TENANT,
        "resource_tenant": TENANT,
        "principal_kind": "user",
        "principal_id": PRINCIPAL,
        "client_id": "client-app",
        "roles": ("Support.Agent",),
        "action": "read",
        "resource_type": "Contact",
        "resource_id": "c-1",
        "categories": ("user.contact.email", "user.name"),
        "purpose": "essential.service.operations.support",
        "decision": "allow",
        "reason": "allowed",
        "policies": ("support-read-contacts",),
        "clauses": ("policy 003, section 2: support agents may read contacts",),
        "status": 200,
        "decision_us": 85,
    }
    values.update(fields)
    return DecisionRecord(**values)


def settings(path: Path, **overrides: Any) -> AuditSettings:
    values: dict[str, Any] = {"path": str(path), "gateway_id": "gw-test", "busy_timeout_seconds": 0.05}
    values.update(overrides)
    return AuditSettings(**values)


@contextlib.asynccontextmanager
async def running(audit_settings: AuditSettings, **kwargs: Any) -> AsyncIterator[AuditLog]:
    log = AuditLog(audit_settings, **kwargs)
    await log.start()
    try:
        yield log
    finally:
        await log.close()


def reader(path: Path) -> sqlite3.Connection:
    """A second, independent connection (what an auditor or another process sees)."""
    conn = sqlite3.connect(str(path), isolation_level=None)
    conn.row_factory = sqlite3.Row
    return conn


def stored_sequences(path: Path, gateway_id: str = "gw-test") -> list[int]:
    with contextlib.closing(reader(path)) as conn:
        return [row[0] for row in conn.execute("SELECT seq FROM decisions WHERE gateway_id = ? ORDER BY seq",
                                               (gateway_id,))]


@contextlib.contextmanager
def write_lock(path: Path) -> Any:
    """Hold the store's write lock from another connection, as a stuck external writer would."""
    conn = sqlite3.connect(str(path), isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    finally:
        conn.execute("ROLLBACK")
        conn.close()
