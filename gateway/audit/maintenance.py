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

Size: opening, migrating (v1 to v3), retention and purge all change the store's shape under the same
locking rules; keeping them together keeps those rules in one reading.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from gateway.audit.chain import GENESIS, Canonical, ChainError, record_hash, table_columns
from gateway.audit.checkpoints import (
    KIND_HEAD,
    KIND_PURGE,
    Checkpoint,
    has_evidence_schema,
    insert_checkpoint,
    parse_checkpoint,
    stored_keys,
)
from gateway.audit.signing import Signer, key_from_jwk

PURGE_CHUNK = 5000
MAX_BREAKS = 20  # per gateway id: the first ones are what matters; the count says how many more


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
class Break:
    """A record the chain or a checkpoint says was changed, removed or moved."""

    seq: int
    decision_id: str
    kind: str  # altered | unlinked | out_of_order | unchained | unhashable | head_missing | rewritten | forged
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "decision_id": self.decision_id, "kind": self.kind, "detail": self.detail}


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
    breaks: list[Break] = field(default_factory=list)
    more_breaks: int = 0
    chained: int = 0  # records whose hash and link were checked
    unchained: int = 0  # records stored before the chain existed (schema < 3)
    checkpoints: int = 0  # signed checkpoints in the store that were checked

    @property
    def ok(self) -> bool:
        return not any(gap.is_loss for gap in self.gaps) and not self.breaks

    @property
    def first_break(self) -> Break | None:
        return min(self.breaks, key=lambda b: b.seq) if self.breaks else None

    def add_break(self, item: Break) -> None:
        if len(self.breaks) < MAX_BREAKS:
            self.breaks.append(item)
        else:
            self.more_breaks += 1

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
            "chain": {"checked": self.chained, "before_chain": self.unchained, "checkpoints": self.checkpoints,
                      "breaks": [b.as_dict() for b in sorted(self.breaks, key=lambda b: b.seq)],
                      "more_breaks": self.more_breaks},
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


def verify(conn: sqlite3.Connection, checkpoints: list[dict[str, Any]] | None = None,
           pinned: dict[str, Ed25519PublicKey] | None = None) -> VerifyReport:
    """Check every gateway id's sequence for gaps and its hash chain for breaks, in one consistent
    read snapshot; with ``checkpoints`` (entries of a checkpoint file), also that the store holds what
    each of them signed (``pinned``: accept only these keys)."""
    conn.execute("BEGIN")
    try:
        gateway_ids = sorted(
            row[0]
            for row in conn.execute(
                "SELECT gateway_id FROM sessions UNION SELECT gateway_id FROM purges "
                "UNION SELECT DISTINCT gateway_id FROM decisions"
            )
        )
        evidence = has_evidence_schema(conn)
        canonical = _canonical(conn) if evidence else None
        keys = stored_keys(conn)
        reports = [_verify_gateway(conn, gateway_id) for gateway_id in gateway_ids]
        if evidence:
            for report in reports:
                _verify_chain(conn, report, canonical, keys)
        if checkpoints is not None:
            by_id = {r.gateway_id: r for r in reports}
            for gateway_id, found in _against_checkpoints(conn, checkpoints, pinned, evidence):
                if gateway_id not in by_id:
                    by_id[gateway_id] = GatewayReport(gateway_id, 1, 0, 0, 0, 0, False)
                    reports.append(by_id[gateway_id])
                by_id[gateway_id].add_break(found)
        return VerifyReport(sorted(reports, key=lambda r: r.gateway_id))
    finally:
        conn.execute("COMMIT")


def _canonical(conn: sqlite3.Connection) -> Canonical | ChainError:
    try:
        columns = table_columns(conn)
        return Canonical(sorted(columns), columns)
    except ChainError as exc:
        return exc


def _watermark_anchor(conn: sqlite3.Connection, gateway_id: str) -> str | None:
    """The hash the first record above the purge watermark links to (None: purged before the chain)."""
    row = conn.execute(
        "SELECT head_hash FROM purges WHERE gateway_id = ? ORDER BY through_seq DESC, id DESC LIMIT 1", (gateway_id,)
    ).fetchone()
    if row is None:
        return GENESIS
    return str(row[0]) or None


def _verify_chain(
    conn: sqlite3.Connection, report: GatewayReport, canonical: Canonical | ChainError | None,
    keys: dict[str, Ed25519PublicKey],
) -> None:
    """Recompute every hash above the watermark, check each link, the commit order, the sessions' heads
    and the signed checkpoints the store holds."""
    gateway_id, watermark = report.gateway_id, report.watermark
    anchor = _watermark_anchor(conn, gateway_id)
    # records without a hash are accepted only below the first session that kept a chain head
    boundary_row = conn.execute(
        "SELECT min(first_seq) FROM sessions WHERE gateway_id = ? AND head_seq IS NOT NULL", (gateway_id,)
    ).fetchone()
    first_chained_row = conn.execute(
        "SELECT min(seq) FROM decisions WHERE gateway_id = ? AND seq > ? AND hash != ''", (gateway_id, watermark)
    ).fetchone()
    limits = [int(v) for v in (boundary_row[0], first_chained_row[0]) if v is not None]
    start = min(limits) if limits else None
    if start is None:  # nothing chained, and no writer that chains: a store of an older gateway
        report.unchained = report.stored
        return
    report.unchained = int(conn.execute(
        "SELECT count(*) FROM decisions WHERE gateway_id = ? AND seq > ? AND seq < ?", (gateway_id, watermark, start)
    ).fetchone()[0])
    if report.unchained:
        anchor = GENESIS  # the first chained record after unchained ones starts a chain
    if isinstance(canonical, ChainError) or canonical is None:
        report.add_break(Break(start, "", "unhashable", str(canonical)))
        return
    names = canonical.names
    sql = (
        f"SELECT id, seq, decision_id, prev_hash, hash, {', '.join(names)} FROM decisions "
        "WHERE gateway_id = ? AND seq >= ? AND seq > ? ORDER BY seq"
    )
    expected = anchor
    previous_id = int(conn.execute(
        "SELECT coalesce(max(id), 0) FROM decisions WHERE gateway_id = ? AND seq > ? AND seq < ?",
        (gateway_id, watermark, start),
    ).fetchone()[0])
    for row in conn.execute(sql, (gateway_id, start, watermark)):
        row_id, seq, decision_id, prev, stored = int(row[0]), int(row[1]), str(row[2]), str(row[3]), str(row[4])
        if row_id <= previous_id:
            report.add_break(Break(seq, decision_id, "out_of_order", "committed before the record with the "
                                   "previous sequence number: records were reordered"))
        previous_id = max(previous_id, row_id)
        if not stored:
            report.add_break(Break(seq, decision_id, "unchained", "has no hash where the chain had begun"))
            expected = None
            continue
        try:
            computed = record_hash(prev, canonical.form(row[5:], coerce=False)[0])
        except ChainError as exc:
            report.add_break(Break(seq, decision_id, "unhashable", str(exc)))
            expected = stored
            continue
        report.chained += 1
        if computed != stored:
            report.add_break(Break(seq, decision_id, "altered",
                                   "its content does not match its hash: the record was edited"))
        elif expected is not None and prev != expected:
            report.add_break(Break(seq, decision_id, "unlinked",
                                   "does not link to the record before it: a record before it was removed or replaced"))
        expected = stored
    _verify_heads(conn, report)
    _verify_stored_checkpoints(conn, report, keys)


def _hash_at(conn: sqlite3.Connection, gateway_id: str, seq: int) -> tuple[str, str] | None:
    row = conn.execute("SELECT hash, decision_id FROM decisions WHERE gateway_id = ? AND seq = ?",
                       (gateway_id, seq)).fetchone()
    return None if row is None else (str(row[0]), str(row[1]))


def _verify_heads(conn: sqlite3.Connection, report: GatewayReport) -> None:
    """Each session's last committed head must still be in the store as it was: a removed tail shows."""
    for row in conn.execute(
        "SELECT head_seq, head_hash, head_decision_id FROM sessions WHERE gateway_id = ? AND head_seq > ?",
        (report.gateway_id, report.watermark),
    ).fetchall():
        seq, head_hash, decision_id = int(row[0]), str(row[1] or ""), str(row[2] or "")
        found = _hash_at(conn, report.gateway_id, seq)
        if found is None:
            report.add_break(Break(seq, decision_id, "head_missing",
                                   "the last record a writer session committed is gone: "
                                   "the end of the log was removed"))
        elif found[0] != head_hash:
            report.add_break(Break(seq, found[1], "rewritten", "differs from the head its writer session recorded"))


def _verify_stored_checkpoints(conn: sqlite3.Connection, report: GatewayReport,
                               keys: dict[str, Ed25519PublicKey]) -> None:
    for row in conn.execute(
        "SELECT kind, seq, decision_id, jws FROM checkpoints WHERE gateway_id = ? ORDER BY id", (report.gateway_id,)
    ).fetchall():
        kind, seq, decision_id, token = str(row[0]), int(row[1]), str(row[2]), str(row[3])
        try:
            checkpoint = parse_checkpoint(token, keys)
        except (jwt.InvalidTokenError, ValueError) as exc:
            report.add_break(Break(seq, decision_id, "forged", f"a stored {kind} checkpoint does not verify: {exc}"))
            continue
        report.checkpoints += 1
        if checkpoint.kind != KIND_HEAD or checkpoint.seq <= report.watermark:
            continue
        found = _hash_at(conn, report.gateway_id, checkpoint.seq)
        if found is None or found[0] != checkpoint.hash:
            report.add_break(Break(checkpoint.seq, checkpoint.decision_id, "rewritten",
                                   "differs from the signed checkpoint stored with it"))


def _against_checkpoints(
    conn: sqlite3.Connection, entries: Iterable[dict[str, Any]], pinned: dict[str, Ed25519PublicKey] | None,
    evidence: bool,
) -> list[tuple[str, Break]]:
    """What contradicts the checkpoints an auditor kept: each (gateway id, break)."""
    trusted: dict[str, Ed25519PublicKey] = dict(pinned or {})
    parsed: list[Checkpoint] = []
    found: list[tuple[str, Break]] = []
    entries = list(entries)
    if pinned is None:
        for entry in entries:
            jwk = entry.get("jwk")
            if isinstance(jwk, dict):
                try:
                    key = key_from_jwk(jwk)
                except ValueError:
                    continue
                trusted[str(jwk.get("kid"))] = key
    for entry in entries:
        try:
            parsed.append(parse_checkpoint(str(entry["jws"]), trusted))
        except (jwt.InvalidTokenError, ValueError) as exc:
            found.append(("", Break(0, "", "forged", f"a checkpoint of the file does not verify: {exc}")))
    markers = [c for c in parsed if c.kind == KIND_PURGE]
    if evidence:  # purge markers the store holds count if a trusted key signed them
        for row in conn.execute("SELECT jws FROM checkpoints WHERE kind = ?", (KIND_PURGE,)):
            try:
                markers.append(parse_checkpoint(str(row[0]), trusted))
            except (jwt.InvalidTokenError, ValueError):
                continue
    for checkpoint in sorted((c for c in parsed if c.kind == KIND_HEAD), key=lambda c: (c.gateway_id, c.seq)):
        gateway_id, seq = checkpoint.gateway_id, checkpoint.seq
        watermark = int(conn.execute(
            "SELECT coalesce(max(through_seq), 0) FROM purges WHERE gateway_id = ?", (gateway_id,)
        ).fetchone()[0])
        if seq <= watermark:
            cover = [m for m in markers if m.gateway_id == gateway_id and m.from_seq <= seq <= m.seq]
            if not cover:
                found.append((gateway_id, Break(seq, checkpoint.decision_id, "deleted",
                                                "removed below a purge watermark that no trusted purge marker covers")))
            elif any(m.seq == seq and m.hash != checkpoint.hash for m in cover):
                found.append((gateway_id, Break(seq, checkpoint.decision_id, "rewritten",
                                                "the purge marker's anchor differs from the checkpoint")))
            continue
        stored = _hash_at(conn, gateway_id, seq) if evidence else None
        if stored is None:
            found.append((gateway_id, Break(seq, checkpoint.decision_id, "deleted",
                                            "the record a signed checkpoint names is not in the store")))
        elif stored[0] != checkpoint.hash:
            found.append((gateway_id, Break(
                seq, stored[1], "rewritten",
                f"its hash differs from the checkpoint signed at {_iso(checkpoint.time_us)}: "
                "the chain up to here was rewritten after that",
            )))
    return found


def _iso(time_us: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time_us / 1_000_000))


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
    conn: sqlite3.Connection, cutoff_us: int, *, include_unexported: bool = False, dry_run: bool = False,
    signer: Signer | None = None,
) -> PurgeResult:
    """Remove records with ``time < cutoff``: for each gateway id the longest run of its sequence, from
    the bottom, whose records are all older than the cutoff (and exported, unless
    ``include_unexported``), so that the chain stays whole above the watermark. A record older than
    the cutoff that comes after a newer one (a slow request recorded late) waits for the next purge.

    Before deleting anything it records, per gateway id, the watermark and the anchor (the hash of the
    last record removed), and, with ``signer`` (the audit key), a signed purge marker naming the range.
    """
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
        candidates = [str(r[0]) for r in conn.execute(
            "SELECT DISTINCT gateway_id FROM decisions WHERE time_us < ? AND id <= ?", (cutoff_us, limit_id)
        )]
        ranges: list[tuple[str, int, int, int, str, str]] = []  # gateway, from, through, count, hash, decision
        for gateway_id in candidates:
            stop = conn.execute(
                "SELECT seq FROM decisions WHERE gateway_id = ? AND (time_us >= ? OR id > ?) ORDER BY seq LIMIT 1",
                (gateway_id, cutoff_us, limit_id),
            ).fetchone()
            bound = int(stop[0]) if stop is not None else None
            where, args = ("gateway_id = ? AND seq < ?", (gateway_id, bound)) if bound is not None else (
                "gateway_id = ?", (gateway_id,))
            low, count = conn.execute(f"SELECT min(seq), count(*) FROM decisions WHERE {where}", args).fetchone()
            if not count:
                continue
            last = conn.execute(
                f"SELECT seq, hash, decision_id FROM decisions WHERE {where} ORDER BY seq DESC LIMIT 1", args
            ).fetchone()
            ranges.append((gateway_id, int(low), int(last[0]), int(count), str(last[1] or ""), str(last[2])))
        watermarks = {g: through for g, _, through, _, _, _ in ranges}
        expected = sum(n for _, _, _, n, _, _ in ranges)
        if dry_run:
            conn.execute("ROLLBACK")
            return PurgeResult(cutoff_us, expected, kept, watermarks)
        now_us = time.time_ns() // 1000
        evidence = has_evidence_schema(conn)
        for gateway_id, low, through, count, head_hash, decision_id in ranges:
            if evidence:
                conn.execute(
                    "INSERT INTO purges (gateway_id, through_seq, cutoff_us, purged_us, removed, from_seq, head_hash) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (gateway_id, through, cutoff_us, now_us, count, low, head_hash),
                )
            else:
                conn.execute(
                    "INSERT INTO purges (gateway_id, through_seq, cutoff_us, purged_us, removed) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (gateway_id, through, cutoff_us, now_us, count),
                )
            if signer is not None and evidence:
                insert_checkpoint(conn, signer, {
                    "kind": KIND_PURGE, "gateway_id": gateway_id, "from_seq": low, "seq": through,
                    "removed": count, "cutoff_us": cutoff_us, "decision_id": decision_id, "hash": head_hash,
                    "time_us": now_us,
                })
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    removed = 0
    for gateway_id, _, through, _, _, _ in ranges:
        removed += _delete_decisions(conn, gateway_id, through)
    if removed:
        _delete_terms(conn, cutoff_us, limit_id)
    return PurgeResult(cutoff_us, removed, kept, watermarks)


def _delete_terms(conn: sqlite3.Connection, cutoff_us: int, limit_id: int) -> None:
    # One short transaction per distinct term: each is a range of the (term, time_us, ref) key; only the
    # terms of records that are gone (a record older than the cutoff may have been kept).
    term = conn.execute("SELECT min(term) FROM decision_terms").fetchone()[0]
    while term is not None:
        conn.execute(
            "DELETE FROM decision_terms WHERE term = ? AND time_us < ? AND ref <= ? "
            "AND NOT EXISTS (SELECT 1 FROM decisions WHERE decisions.id = decision_terms.ref)",
            (term, cutoff_us, limit_id),
        )
        term = conn.execute("SELECT min(term) FROM decision_terms WHERE term > ?", (term,)).fetchone()[0]


def _delete_decisions(conn: sqlite3.Connection, gateway_id: str, through: int) -> int:
    removed = 0
    while True:
        changed = conn.execute(
            "DELETE FROM decisions WHERE id IN "
            "(SELECT id FROM decisions WHERE gateway_id = ? AND seq <= ? LIMIT ?)",
            (gateway_id, through, PURGE_CHUNK),
        ).rowcount
        removed += changed
        if changed < PURGE_CHUNK:
            return removed
