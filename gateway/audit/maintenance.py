"""``verify`` (is anything missing?) and ``purge`` (retention) over the store.

Every writer numbers its records 1, 2, 3, ... per gateway id, and commits them in that order, so a
missing number below the highest stored one is a lost (or deleted) record. ``verify`` reports such
gaps per gateway id, taking into account:

* purges: ``purge`` records, per gateway id, the highest sequence number it removed (the
  watermark); numbers at or below it are not expected any more;
* writer sessions: each start records its first number, each batch the highest number handed out
  so far, and a clean ``close()`` the last one. A gap that ends where the next session begins,
  after a session that never closed, is an unclean end (a crash): in ``durable`` mode those are
  requests that never got a response (reported, not counted as loss); in ``async`` mode they are
  records lost from the queue (counted as loss). A cleanly closed session whose last numbers are
  missing has lost them.

``purge`` removes records older than a cutoff in small transactions (the gateway keeps writing),
writes the watermarks first, and keeps records the OTLP outbox has not exported yet unless told
otherwise.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass, field
from typing import Any

PURGE_CHUNK = 5000


@dataclass
class Gap:
    first: int
    last: int
    kind: str  # "missing" | "unclean_end"
    mode: str = ""  # the writer mode of the session it belongs to, when known

    @property
    def count(self) -> int:
        return self.last - self.first + 1

    @property
    def is_loss(self) -> bool:
        return self.kind == "missing" or self.mode != "durable"


@dataclass
class GatewayReport:
    gateway_id: str
    expected_from: int
    stored: int
    highest: int
    watermark: int
    sessions: int
    open_session: bool
    gaps: list[Gap] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(gap.is_loss for gap in self.gaps)

    def as_dict(self) -> dict[str, Any]:
        return {
            "gateway_id": self.gateway_id,
            "ok": self.ok,
            "expected_from": self.expected_from,
            "highest": self.highest,
            "stored": self.stored,
            "purged_through": self.watermark,
            "sessions": self.sessions,
            "open_session": self.open_session,
            "gaps": [
                {"first": g.first, "last": g.last, "count": g.count, "kind": g.kind, "mode": g.mode, "loss": g.is_loss}
                for g in self.gaps
            ],
        }


@dataclass
class VerifyReport:
    gateways: list[GatewayReport]

    @property
    def ok(self) -> bool:
        return all(report.ok for report in self.gateways)


@dataclass
class _Session:
    first_seq: int
    assigned_high: int
    closed: bool
    last_seq: int | None
    mode: str


def verify(conn: sqlite3.Connection) -> VerifyReport:
    """Check every gateway id's sequence for gaps, in one consistent read snapshot."""
    conn.execute("BEGIN")
    try:
        gateway_ids = sorted(
            row[0]
            for row in conn.execute(
                "SELECT gateway_id FROM sessions UNION SELECT gateway_id FROM purges "
                "UNION SELECT DISTINCT gateway_id FROM decisions"
            )
        )
        return VerifyReport([_verify_gateway(conn, gateway_id) for gateway_id in gateway_ids])
    finally:
        conn.execute("COMMIT")


def _verify_gateway(conn: sqlite3.Connection, gateway_id: str) -> GatewayReport:
    watermark = int(
        conn.execute("SELECT coalesce(max(through_seq), 0) FROM purges WHERE gateway_id = ?", (gateway_id,))
        .fetchone()[0]
    )
    sessions = [
        _Session(int(r["first_seq"]), int(r["assigned_high"]), r["closed_us"] is not None,
                 None if r["last_seq"] is None else int(r["last_seq"]), str(r["mode"]))
        for r in conn.execute(
            "SELECT first_seq, assigned_high, closed_us, last_seq, mode FROM sessions "
            "WHERE gateway_id = ? ORDER BY first_seq, id",
            (gateway_id,),
        )
    ]
    stored, lowest, highest = conn.execute(
        "SELECT count(*), min(seq), max(seq) FROM decisions WHERE gateway_id = ? AND seq > ?",
        (gateway_id, watermark),
    ).fetchone()
    stored = int(stored)
    if watermark:
        expected_from = watermark + 1
    elif sessions:
        expected_from = sessions[0].first_seq
    else:
        expected_from = int(lowest) if lowest is not None else 1
    expected_from = max(expected_from, 1)
    highest = int(highest) if highest is not None else expected_from - 1

    raw_gaps: list[tuple[int, int]] = []
    if stored and int(lowest) > expected_from:
        raw_gaps.append((expected_from, int(lowest) - 1))
    if stored and stored != highest - max(expected_from, int(lowest)) + 1:
        raw_gaps.extend(
            (int(first), int(last))
            for first, last in conn.execute(
                "SELECT seq + 1, next - 1 FROM ("
                " SELECT seq, lead(seq) OVER (ORDER BY seq) AS next FROM decisions"
                " WHERE gateway_id = ? AND seq > ?) WHERE next > seq + 1",
                (gateway_id, watermark),
            )
        )
    last_session = sessions[-1] if sessions else None
    if last_session is not None and last_session.closed and last_session.last_seq is not None:
        tail_from = max(highest + 1, expected_from)
        if last_session.last_seq >= tail_from:
            raw_gaps.append((tail_from, last_session.last_seq))

    gaps = [_classify(first, last, sessions) for first, last in sorted(raw_gaps)]
    return GatewayReport(
        gateway_id=gateway_id,
        expected_from=expected_from,
        stored=stored,
        highest=highest,
        watermark=watermark,
        sessions=len(sessions),
        open_session=last_session is not None and not last_session.closed,
        gaps=gaps,
    )


def _classify(first: int, last: int, sessions: list[_Session]) -> Gap:
    owner: _Session | None = None
    for index, session in enumerate(sessions):
        if session.first_seq <= first:
            owner = session
            following = sessions[index + 1] if index + 1 < len(sessions) else None
            if following is not None and following.first_seq == last + 1 and not session.closed:
                return Gap(first, last, "unclean_end", session.mode)
    return Gap(first, last, "missing", owner.mode if owner is not None else "")


@dataclass
class PurgeResult:
    cutoff_us: int
    removed: int
    kept_unexported: int
    watermarks: dict[str, int]


def purge(
    conn: sqlite3.Connection, cutoff_us: int, *, include_unexported: bool = False, dry_run: bool = False
) -> PurgeResult:
    """Remove records with ``time < cutoff``; records the per-gateway watermarks first."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        max_id = int(conn.execute("SELECT coalesce(max(id), 0) FROM decisions").fetchone()[0])
        cursor_row = conn.execute("SELECT cursor FROM export_state WHERE name = 'otlp'").fetchone()
        limit_id = max_id
        kept = 0
        if cursor_row is not None and not include_unexported:
            limit_id = min(max_id, int(cursor_row[0]))
            kept = int(
                conn.execute(
                    "SELECT count(*) FROM decisions WHERE time_us < ? AND id > ? AND id <= ?",
                    (cutoff_us, limit_id, max_id),
                ).fetchone()[0]
            )
        per_gateway = conn.execute(
            "SELECT gateway_id, max(seq), count(*) FROM decisions WHERE time_us < ? AND id <= ? GROUP BY gateway_id",
            (cutoff_us, limit_id),
        ).fetchall()
        watermarks = {str(g): int(high) for g, high, _ in per_gateway}
        expected = sum(int(n) for _, _, n in per_gateway)
        if dry_run:
            conn.execute("ROLLBACK")
            return PurgeResult(cutoff_us, expected, kept, watermarks)
        now_us = time.time_ns() // 1000
        conn.executemany(
            "INSERT INTO purges (gateway_id, through_seq, cutoff_us, purged_us, removed) VALUES (?, ?, ?, ?, ?)",
            [(str(g), int(high), cutoff_us, now_us, int(n)) for g, high, n in per_gateway],
        )
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    if expected:
        _delete_terms(conn, cutoff_us, limit_id)
    removed = _delete_decisions(conn, cutoff_us, limit_id) if expected else 0
    return PurgeResult(cutoff_us, removed, kept, watermarks)


def _delete_terms(conn: sqlite3.Connection, cutoff_us: int, limit_id: int) -> None:
    # One short transaction per distinct term: each is a range of the (term, time_us, ref) key.
    term = conn.execute("SELECT min(term) FROM decision_terms").fetchone()[0]
    while term is not None:
        conn.execute(
            "DELETE FROM decision_terms WHERE term = ? AND time_us < ? AND ref <= ?", (term, cutoff_us, limit_id)
        )
        term = conn.execute("SELECT min(term) FROM decision_terms WHERE term > ?", (term,)).fetchone()[0]


def _delete_decisions(conn: sqlite3.Connection, cutoff_us: int, limit_id: int) -> int:
    removed = 0
    while True:
        changed = conn.execute(
            "DELETE FROM decisions WHERE id IN "
            "(SELECT id FROM decisions WHERE time_us < ? AND id <= ? LIMIT ?)",
            (cutoff_us, limit_id, PURGE_CHUNK),
        ).rowcount
        removed += changed
        if changed < PURGE_CHUNK:
            return removed
