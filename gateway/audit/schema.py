"""The store's tables, how a ``DecisionRecord`` becomes rows, and how connections are opened.

``decisions`` holds one row per record. ``id`` (AUTOINCREMENT, so never reused after a purge) is the
commit order, which the OTLP outbox cursor follows. Multi-valued and hierarchical filters (data
categories, policy ids, purpose) go through ``decision_terms``: one row per (term, record), keyed
``(term, time_us, ref)`` so that "category C (or a child of C) in a time window" is one index range,
with a partial index over denials for "denials per category per day". Times are integer microseconds
since the epoch (exact comparisons, identical in SQLite and ClickHouse).

``sessions`` records each writer's life (first sequence, highest sequence handed out so far, clean
close); ``purges`` records the sequence watermark below which records were removed on purpose, so
that ``verify`` tells a purge from a loss; ``export_state`` holds the outbox cursor and its lease.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from gateway.audit.checkpoints import ensure_evidence_schema
from gateway.audit.record import DecisionRecord

SCHEMA_VERSION = 3  # 3: the hash chain, checkpoints and purge markers (gateway/audit/checkpoints.py)
WRITER_CACHE_KIB = 8192  # an append-mostly writer needs little cache; bigger only grows RSS

TERM_CATEGORY = "c:"
TERM_POLICY = "p:"
TERM_PURPOSE = "u:"
TERM_SUBJECT = "s:"

DDL = """
CREATE TABLE IF NOT EXISTS decisions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    decision_id TEXT NOT NULL,
    gateway_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    time_us INTEGER NOT NULL,
    trace_id TEXT NOT NULL,
    span_id TEXT NOT NULL,
    parent_span_id TEXT NOT NULL,
    method TEXT NOT NULL,
    path TEXT NOT NULL,
    route TEXT NOT NULL,
    tenant TEXT NOT NULL,
    resource_tenant TEXT NOT NULL,
    principal_kind TEXT NOT NULL,
    principal_id TEXT NOT NULL,
    client_id TEXT NOT NULL,
    roles TEXT NOT NULL,
    action TEXT NOT NULL,
    resource_type TEXT NOT NULL,
    resource_id TEXT NOT NULL,
    categories TEXT NOT NULL,
    purpose TEXT NOT NULL,
    recipient TEXT NOT NULL,
    consent_ref TEXT NOT NULL,
    decision TEXT NOT NULL,
    reason TEXT NOT NULL,
    policies TEXT NOT NULL,
    clauses TEXT NOT NULL,
    masked_fields TEXT NOT NULL,
    policy_hash TEXT NOT NULL,
    status INTEGER NOT NULL,
    decision_us INTEGER NOT NULL,
    upstream_ms REAL NOT NULL,
    duration_us INTEGER NOT NULL,
    extra TEXT NOT NULL,
    inputs TEXT NOT NULL DEFAULT '',
    shadow_decision TEXT NOT NULL DEFAULT '',
    shadow_policies TEXT NOT NULL DEFAULT '[]'
);
CREATE TABLE IF NOT EXISTS decision_terms (
    term TEXT NOT NULL,
    time_us INTEGER NOT NULL,
    ref INTEGER NOT NULL,
    denied INTEGER NOT NULL,
    PRIMARY KEY (term, time_us, ref)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sessions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    gateway_id TEXT NOT NULL,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    mode TEXT NOT NULL,
    started_us INTEGER NOT NULL,
    first_seq INTEGER NOT NULL,
    assigned_high INTEGER NOT NULL,
    closed_us INTEGER,
    last_seq INTEGER
);
CREATE TABLE IF NOT EXISTS purges (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    gateway_id TEXT NOT NULL,
    through_seq INTEGER NOT NULL,
    cutoff_us INTEGER NOT NULL,
    purged_us INTEGER NOT NULL,
    removed INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS export_state (
    name TEXT PRIMARY KEY,
    cursor INTEGER NOT NULL,
    owner TEXT NOT NULL,
    lease_until_us INTEGER NOT NULL,
    exported INTEGER NOT NULL DEFAULT 0,
    updated_us INTEGER NOT NULL
);
"""

INDEXES = """
CREATE UNIQUE INDEX IF NOT EXISTS decisions_decision_id ON decisions (decision_id);
CREATE INDEX IF NOT EXISTS decisions_time ON decisions (time_us);
CREATE INDEX IF NOT EXISTS decisions_principal ON decisions (principal_id, time_us);
CREATE UNIQUE INDEX IF NOT EXISTS decisions_gateway_seq ON decisions (gateway_id, seq);
CREATE INDEX IF NOT EXISTS decision_terms_denied ON decision_terms (time_us, term) WHERE denied = 1;
CREATE INDEX IF NOT EXISTS sessions_gateway ON sessions (gateway_id);
"""

DECISION_COLUMNS = (
    "id", "decision_id", "gateway_id", "seq", "time_us", "trace_id", "span_id", "parent_span_id",
    "method", "path", "route", "tenant", "resource_tenant", "principal_kind", "principal_id", "client_id",
    "roles", "action", "resource_type", "resource_id", "categories", "purpose", "recipient", "consent_ref",
    "decision", "reason", "policies", "clauses", "masked_fields", "policy_hash", "status", "decision_us",
    "upstream_ms", "duration_us", "extra", "inputs", "shadow_decision", "shadow_policies",
)
#: Columns added after version 1, with their definitions (added to older stores when opened for writing).
ADDED_COLUMNS = (
    ("inputs", "TEXT NOT NULL DEFAULT ''"),
    ("shadow_decision", "TEXT NOT NULL DEFAULT ''"),
    ("shadow_policies", "TEXT NOT NULL DEFAULT '[]'"),
)
INSERT_DECISION = (
    f"INSERT INTO decisions ({', '.join(DECISION_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in DECISION_COLUMNS)})"
)
INSERT_TERM = "INSERT INTO decision_terms (term, time_us, ref, denied) VALUES (?, ?, ?, ?)"

_EMPTY_LIST = "[]"
_EMPTY_DICT = "{}"


class StoreError(Exception):
    """The store is missing or not an audit store."""


def _json_list(values: tuple[str, ...]) -> str:
    return json.dumps(values) if values else _EMPTY_LIST


def time_to_us(seconds: float) -> int:
    return round(seconds * 1_000_000)


def record_row(rec: DecisionRecord) -> tuple[Any, ...]:
    """The ``decisions`` row of ``rec`` without its leading ``id`` (assigned under the write lock)."""
    return (
        rec.decision_id, rec.gateway_id, rec.sequence, time_to_us(rec.time), rec.trace_id, rec.span_id,
        rec.parent_span_id, rec.method, rec.path, rec.route, rec.tenant, rec.resource_tenant,
        rec.principal_kind, rec.principal_id, rec.client_id, _json_list(rec.roles), rec.action,
        rec.resource_type, rec.resource_id, _json_list(rec.categories), rec.purpose, rec.recipient,
        rec.consent_ref, rec.decision, rec.reason, _json_list(rec.policies), _json_list(rec.clauses),
        _json_list(rec.masked_fields), rec.policy_hash, rec.status, rec.decision_us, rec.upstream_ms,
        rec.duration_us, json.dumps(rec.extra, default=str) if rec.extra else _EMPTY_DICT, rec.inputs,
        rec.shadow_decision, _json_list(rec.shadow_policies),
    )


def record_terms(rec: DecisionRecord) -> list[str]:
    """The ``decision_terms`` keys of ``rec``, without duplicates."""
    terms = [TERM_CATEGORY + c for c in rec.categories]
    terms.extend(TERM_POLICY + p for p in rec.policies)
    if rec.purpose:
        terms.append(TERM_PURPOSE + rec.purpose)
    for group in rec.subjects:
        terms.extend(TERM_SUBJECT + key for key in group)
    return list(dict.fromkeys(terms)) if len(terms) > 1 else terms


def record_from_row(row: sqlite3.Row) -> DecisionRecord:
    """A stored row back as a ``DecisionRecord`` (``time`` from its microseconds)."""
    return DecisionRecord(
        decision_id=row["decision_id"],
        time=row["time_us"] / 1_000_000,
        method=row["method"],
        path=row["path"],
        trace_id=row["trace_id"],
        span_id=row["span_id"],
        parent_span_id=row["parent_span_id"],
        route=row["route"],
        tenant=row["tenant"],
        resource_tenant=row["resource_tenant"],
        principal_kind=row["principal_kind"],
        principal_id=row["principal_id"],
        client_id=row["client_id"],
        roles=tuple(json.loads(row["roles"])),
        action=row["action"],
        resource_type=row["resource_type"],
        resource_id=row["resource_id"],
        categories=tuple(json.loads(row["categories"])),
        purpose=row["purpose"],
        recipient=row["recipient"],
        consent_ref=row["consent_ref"],
        decision=row["decision"],
        reason=row["reason"],
        policies=tuple(json.loads(row["policies"])),
        clauses=tuple(json.loads(row["clauses"])),
        masked_fields=tuple(json.loads(row["masked_fields"])),
        policy_hash=row["policy_hash"],
        status=row["status"],
        decision_us=row["decision_us"],
        upstream_ms=row["upstream_ms"],
        gateway_id=row["gateway_id"],
        sequence=row["seq"],
        duration_us=row["duration_us"],
        extra=json.loads(row["extra"]),
        inputs=_column(row, "inputs", ""),
        shadow_decision=_column(row, "shadow_decision", ""),
        shadow_policies=tuple(json.loads(_column(row, "shadow_policies", "[]"))),
    )


def _column(row: sqlite3.Row, name: str, default: str) -> str:
    """A column that stores of schema version 1 (read-only, never migrated) do not have."""
    try:
        return str(row[name])
    except IndexError:
        return default


def connect_writer(path: str, *, durable: bool, busy_timeout: float) -> sqlite3.Connection:
    """A read-write connection in autocommit mode (transactions are explicit), schema ensured.

    synchronous=FULL in durable mode: in WAL mode a commit then survives power loss, not just a
    process crash (NORMAL survives kill -9 but may lose the last commits on power loss, which would
    break "committed before the response"). Group commits pay one fsync per batch, not per record.
    """
    directory = Path(path).parent
    if str(directory) not in ("", "."):
        directory.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=busy_timeout)
    try:
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise sqlite3.OperationalError(f"cannot switch {path} to WAL mode (got {mode})")
        conn.execute(f"PRAGMA synchronous = {'FULL' if durable else 'NORMAL'}")
        # index pages of a large store (principal ids arrive in random order) stay in memory
        conn.execute(f"PRAGMA cache_size = -{WRITER_CACHE_KIB}")
        ensure_schema(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def ensure_schema(conn: sqlite3.Connection, *, with_indexes: bool = True) -> None:
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise StoreError(f"audit store schema version {version} is newer than this gateway ({SCHEMA_VERSION})")
    conn.execute("BEGIN IMMEDIATE")
    try:
        for statement in _statements(DDL + (INDEXES if with_indexes else "")):
            conn.execute(statement)
        present = {row[1] for row in conn.execute("PRAGMA table_info(decisions)")}
        for name, definition in ADDED_COLUMNS:  # a version 1 store: add what it lacks
            if name not in present:
                conn.execute(f"ALTER TABLE decisions ADD COLUMN {name} {definition}")
        ensure_evidence_schema(conn)  # version 3: chain columns, checkpoints, audit keys
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def create_indexes(conn: sqlite3.Connection) -> None:
    for statement in _statements(INDEXES):
        conn.execute(statement)


def _statements(script: str) -> Iterable[str]:
    return (s.strip() for s in script.split(";") if s.strip())


def connect_reader(path: str) -> sqlite3.Connection:
    """A read-only connection (``mode=ro``): queries never block or disturb the writer (WAL)."""
    if not os.path.exists(path):
        raise StoreError(f"no audit store at {path}")
    conn = sqlite3.connect(f"file:{quote(os.path.abspath(path))}?mode=ro", uri=True, isolation_level=None)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA query_only = 1")
    conn.execute("PRAGMA busy_timeout = 5000")
    _check_is_store(conn, path)
    return conn


def connect_maintenance(path: str, busy_timeout: float = 5.0) -> sqlite3.Connection:
    """A read-write connection for purge and the exporter cursor; the store must already exist."""
    if not os.path.exists(path):
        raise StoreError(f"no audit store at {path}")
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=busy_timeout)
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
    _check_is_store(conn, path)
    return conn


def _check_is_store(conn: sqlite3.Connection, path: str) -> None:
    try:
        found = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'decisions'").fetchone()
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise StoreError(f"{path} is not an audit store: {exc}") from exc
    if found is None:
        conn.close()
        raise StoreError(f"{path} is not an audit store (no decisions table)")
