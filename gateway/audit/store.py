"""The writer's side of the store: the connection, the session, the hash chain head and one batch's
transaction.

``Store.open`` opens (or creates) the file, loads the signing key and begins a writer session: the
gateway id's sequence continues after the highest number stored, handed out or purged, and its
chain from its last stored record (or the anchor of its last purge). ``Store.write`` writes one
batch in one ``BEGIN IMMEDIATE`` transaction: each row linked to the one before it, multi-row
``INSERT`` statements of a few fixed sizes (each compiled once), the session's high-water mark and
head, and a signed checkpoint when one is due. The chain head advances only once the transaction
committed, so a retried batch links from the same head again. ``Store.finish`` marks the session
closed. Failures are ``sqlite3.Error``; what to do about them is ``writer.py``'s business.
"""

from __future__ import annotations

import logging
import os
import socket
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gateway.audit.chain import CHAIN_COLUMNS, GENESIS, Canonical, ChainError, link, table_columns
from gateway.audit.channel import Channel, Item
from gateway.audit.checkpoints import head_claims, insert_checkpoint, register_key
from gateway.audit.errors import AuditUnavailable
from gateway.audit.record import DecisionRecord
from gateway.audit.rows import RowEncoder
from gateway.audit.schema import DECISION_COLUMNS, StoreError, connect_writer, time_to_us
from gateway.audit.signing import KeyFileError, Signer, load_or_create_key

logger = logging.getLogger("gateway.audit")

_CONTENT_COLUMNS = DECISION_COLUMNS[1:]  # what RowEncoder.row gives, in that order (the chain hashes them)
_CHAINED_COLUMNS = (*DECISION_COLUMNS, *CHAIN_COLUMNS)
_TERM_COLUMNS = ("term", "time_us", "ref", "denied")
#: Rows per multi-row INSERT, largest first: a batch is cut into these, so each statement is
#: compiled once and cached by sqlite3, whatever the batch sizes.
_CHUNKS = (256, 64, 16, 4, 1)


def insert_sql(table: str, columns: Sequence[str], rows: int) -> str:
    one = "(" + ", ".join("?" for _ in columns) + ")"
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES " + ", ".join(one for _ in range(rows))


class MultiInsert:
    """``INSERT`` of many rows into one table with few statements (one SQLite step each). The rows
    come as one flat list of values, row after row (no tuple per row to build and take apart)."""

    def __init__(self, table: str, columns: Sequence[str], max_variables: int) -> None:
        self.width = width = len(columns)
        self._chunks = tuple(n for n in _CHUNKS if n * width <= max_variables) or (1,)
        self._sql = {n: insert_sql(table, columns, n) for n in self._chunks}

    def __call__(self, conn: sqlite3.Connection, values: list[Any]) -> None:
        width = self.width
        start, total = 0, len(values) // width
        for size in self._chunks:
            sql = self._sql[size]
            while total - start >= size:
                conn.execute(sql, values[start * width:(start + size) * width])
                start += size


class Store:
    """One writer session of the store (the writer thread's only)."""

    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self.settings = channel.settings
        self._conn: sqlite3.Connection | None = None
        self._session_id = 0
        self._rows = RowEncoder()
        self._insert_decisions: MultiInsert | None = None
        self._insert_terms: MultiInsert | None = None
        self._canonical: Canonical | None = None
        self._signer: Signer | None = None
        self._head = bytes.fromhex(GENESIS)
        self._head_seq = 0
        self._head_decision = ""
        self._checkpointed_seq = 0
        self._last_checkpoint = 0.0
        #: set by the writer for a session's last batch, which carries a checkpoint
        self.final_batch = False
        self.checkpoints = 0

    @property
    def is_open(self) -> bool:
        return self._conn is not None

    def open(self) -> None:
        """Open (or create) the store and begin a session; raises ``AuditUnavailable`` if it cannot."""
        settings = self.settings
        try:
            conn = connect_writer(
                settings.path, durable=self.channel.durable, busy_timeout=settings.busy_timeout_seconds
            )
        except (sqlite3.Error, OSError, StoreError) as exc:
            raise AuditUnavailable(f"cannot open the audit store {settings.path}: {exc}") from exc
        try:
            signer = Signer(load_or_create_key(Path(settings.signing_key_path)))
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
            raise AuditUnavailable(f"cannot start a session in the audit store {settings.path}: {exc}") from exc
        limit = conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
        self._insert_decisions = MultiInsert("decisions", _CHAINED_COLUMNS, limit)
        self._insert_terms = MultiInsert("decision_terms", _TERM_COLUMNS, limit)
        self._conn = conn

    def _begin_session(self, conn: sqlite3.Connection) -> None:
        channel = self.channel
        gateway_id = channel.gateway_id
        host = socket.gethostname()
        conn.execute("BEGIN IMMEDIATE")
        try:
            for other in conn.execute(
                "SELECT pid FROM sessions WHERE gateway_id = ? AND host = ? AND closed_us IS NULL AND pid != ?",
                (gateway_id, host, os.getpid()),
            ).fetchall():
                if _process_alive(int(other["pid"])):
                    raise AuditUnavailable(
                        f"gateway id {gateway_id!r} is already writing {self.settings.path} "
                        f"(pid {other['pid']}); give each writer its own audit gateway_id"
                    )
            high = conn.execute(
                "SELECT max(x) FROM ("
                " SELECT max(seq) AS x FROM decisions WHERE gateway_id = :g"
                " UNION ALL SELECT max(assigned_high) FROM sessions WHERE gateway_id = :g"
                " UNION ALL SELECT max(last_seq) FROM sessions WHERE gateway_id = :g"
                " UNION ALL SELECT max(through_seq) FROM purges WHERE gateway_id = :g)",
                {"g": gateway_id},
            ).fetchone()[0]
            channel.next_seq = int(high or 0) + 1
            self._load_head(conn)
            assert self._signer is not None
            register_key(conn, self._signer)
            self._session_id = int(
                conn.execute(
                    "INSERT INTO sessions (gateway_id, host, pid, mode, started_us, first_seq, assigned_high) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (gateway_id, host, os.getpid(), self.settings.mode, time.time_ns() // 1000,
                     channel.next_seq, channel.next_seq - 1),
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
        gateway_id = self.channel.gateway_id
        last = conn.execute(
            "SELECT seq, hash, decision_id FROM decisions WHERE gateway_id = ? ORDER BY seq DESC LIMIT 1",
            (gateway_id,),
        ).fetchone()
        if last is None:
            last = conn.execute(
                "SELECT through_seq, head_hash, '' FROM purges WHERE gateway_id = ? ORDER BY through_seq DESC LIMIT 1",
                (gateway_id,),
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

    def row(self, rec: DecisionRecord) -> tuple[tuple[Any, ...], bytes]:
        """The record's row (its values coerced to the columns' types) and its canonical form."""
        assert self._canonical is not None
        row = self._rows.row(rec)
        form, coerced = self._canonical.form(row, coerce=True)
        return (row if coerced is None else coerced), form

    def terms(self, rec: DecisionRecord) -> list[str]:
        return self._rows.terms(rec)

    # -- one transaction -----------------------------------------------------------------------------

    def write(
        self, rows: list[tuple[Any, ...]], forms: list[bytes], terms: list[list[str]], batch: list[Item]
    ) -> set[int]:
        """One transaction for the batch; returns the indexes of records rejected by a constraint.

        Each row is linked to the one before it (the chain head is only advanced once the transaction
        committed, so a retried batch links from the same head again).
        """
        conn = self._conn
        assert conn is not None and self._insert_decisions is not None and self._insert_terms is not None
        conn.execute("BEGIN IMMEDIATE")
        try:
            base = _last_id(conn)
            rejected: set[int] = set()
            head = self._head
            head_hex = head.hex()
            chained: list[Any] = []  # the rows, flat: id, content, prev_hash, hash, id, ...
            append, extend = chained.append, chained.extend
            for i, (row, form) in enumerate(zip(rows, forms, strict=True), 1):
                digest = link(head, form)
                digest_hex = digest.hex()
                append(base + i)
                extend(row)
                append(head_hex)
                append(digest_hex)
                head, head_hex = digest, digest_hex
            try:
                self._insert_decisions(conn, chained)
                self._insert_terms(conn, _term_rows(base, rows, terms, batch, rejected))
            except sqlite3.IntegrityError:
                conn.execute("ROLLBACK")
                conn.execute("BEGIN IMMEDIATE")
                base = _last_id(conn)
                rejected, head = self._write_one_by_one(conn, base, rows, forms, terms, batch)
            last = max((i for i in range(len(rows)) if i not in rejected), default=-1)
            head_seq, head_decision = (
                (rows[last][2], rows[last][0]) if last >= 0 else (self._head_seq, self._head_decision)
            )
            conn.execute(
                "UPDATE sessions SET assigned_high = ?, head_seq = ?, head_hash = ?, head_decision_id = ? "
                "WHERE id = ?",
                (self.channel.next_seq - 1, head_seq or None, head.hex() if head_seq else None,
                 head_decision or None, self._session_id),
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
        return self.final_batch or time.monotonic() - self._last_checkpoint >= interval

    def _checkpoint(self, conn: sqlite3.Connection, seq: int, decision_id: str, hash_hex: str, ref: int) -> bool:
        """Sign the chain head into the batch's transaction; a failure to sign never costs a record."""
        if self._signer is None:
            return False
        try:
            claims = head_claims(self.channel.gateway_id, seq, decision_id, hash_hex, time.time_ns() // 1000)
            insert_checkpoint(conn, self._signer, claims, ref)
        except sqlite3.Error:
            raise
        except Exception:
            logger.exception("signing the audit checkpoint at sequence %d failed; the next batch tries again", seq)
            return False
        return True

    def _write_one_by_one(
        self, conn: sqlite3.Connection, base: int, rows: list[tuple[Any, ...]], forms: list[bytes],
        terms: list[list[str]], batch: list[Item],
    ) -> tuple[set[int], bytes]:
        """After a constraint failure: each row alone, the chain linking only the rows that were stored."""
        assert self._insert_terms is not None
        rejected: set[int] = set()
        head = self._head
        insert_one = insert_sql("decisions", _CHAINED_COLUMNS, 1)
        for index, (row, form) in enumerate(zip(rows, forms, strict=True)):
            digest = link(head, form)
            try:
                conn.execute(insert_one, (base + index + 1, *row, head.hex(), digest.hex()))
            except sqlite3.IntegrityError as exc:
                rejected.add(index)
                self.channel.stats.rejected += 1
                rec = batch[index][0]
                logger.error(
                    "audit record %s (gateway %s, sequence %d) rejected by the store: %s",
                    rec.decision_id, rec.gateway_id, rec.sequence, exc,
                )
                continue
            head = digest
        self._insert_terms(conn, _term_rows(base, rows, terms, batch, rejected))
        return rejected, head

    def probe(self) -> None:
        """One small write transaction (the session's high-water mark): raises while the store cannot
        be written."""
        conn = self._conn
        assert conn is not None
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(
                "UPDATE sessions SET assigned_high = ? WHERE id = ?", (self.channel.next_seq - 1, self._session_id)
            )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def finish(self) -> None:
        conn = self._conn
        if conn is None:
            return
        channel = self.channel
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                if channel.healthy and self._checkpoint_due(self._head_seq):
                    # the head was committed by an earlier batch: this checkpoint travels as a span of its own
                    self.final_batch = True
                    if self._checkpoint(conn, self._head_seq, self._head_decision, self._head.hex(), 0):
                        self.checkpoints += 1
                conn.execute(
                    "UPDATE sessions SET closed_us = ?, last_seq = ? WHERE id = ?",
                    (time_to_us(time.time()), channel.next_seq - 1, self._session_id),
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
            channel.healthy = False


def _last_id(conn: sqlite3.Connection) -> int:
    found = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'decisions'").fetchone()
    return int(found[0]) if found else 0


def _term_rows(
    base: int, rows: list[tuple[Any, ...]], terms: list[list[str]], batch: list[Item], skip: set[int]
) -> list[Any]:
    """The batch's ``decision_terms`` rows, flat: term, time_us, ref, denied, term, ..."""
    out: list[Any] = []
    for index, keys in enumerate(terms):
        if index in skip or not keys:
            continue
        count = len(keys)
        segment: list[Any] = [None] * (4 * count)
        segment[0::4] = keys
        segment[1::4] = [rows[index][3]] * count
        segment[2::4] = [base + index + 1] * count
        segment[3::4] = [0 if batch[index][0].decision == "allow" else 1] * count
        out.extend(segment)
    return out


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
