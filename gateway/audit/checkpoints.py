"""Signed checkpoints and purge markers: what makes a rewritten chain visible to an auditor.

A checkpoint is a compact JWS (EdDSA, the gateway's audit key, ``kid`` = the key's RFC 7638
thumbprint) over ``{"kind": "head", "gateway_id", "seq", "decision_id", "hash", "time_us"}``: the
head of one gateway id's chain at that moment. The writer thread signs one inside the group commit
that makes its head record durable, at most every ``audit.checkpoint_interval_seconds`` and always in
the last batch of a session, so a checkpoint is in the store as soon as the record it names is. The
OTLP outbox sends it as an ``audit.checkpoint`` event of that record's ``authz.decision`` span (the
checkpoint and the record share a transaction, so the exporter never sees one without the other).

A purge marker is the same kind of JWS with ``"kind": "purge"``: the gateway id, the sequence range
removed (``from_seq``..``seq``), how many records, the cutoff, and ``hash``/``decision_id`` of the
last removed record: the anchor the first remaining record links to. ``gateway audit purge`` signs it
and stores it before deleting anything; the outbox sends it as a span of its own (``audit.purge``).

What an auditor does with them (``gateway audit verify --checkpoints FILE``): keep the checkpoints as
they arrive at the collector (or ``gateway audit checkpoints > FILE`` from a copy of the store taken
earlier), each with the public JWK it carries. Later, a store whose chain verifies must also contain,
for every checkpoint, the record at its sequence number with exactly its hash, or, for a purged
range, a purge marker signed by a key of the file that covers it. Anyone who edits a record and
recomputes the chain after it changes the hash at every later sequence number, so the first
checkpoint signed after the edited record contradicts the store. Limits: records written after the
last checkpoint the auditor holds can be rewritten or truncated without that evidence (the interval
bounds the window); whoever holds the audit key can sign anything, so it lives in a 0600 file, never
in the store or a log; the public keys in the store (``audit_keys``) are a convenience for ``verify``
without a file, not a trust anchor.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from gateway.audit.signing import Signer, key_from_jwk, verify_jws

KIND_HEAD = "head"
KIND_PURGE = "purge"
CHECKPOINT_TYP = "audit-checkpoint+jwt"

EVIDENCE_DDL = """
CREATE TABLE IF NOT EXISTS checkpoints (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    gateway_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    from_seq INTEGER NOT NULL DEFAULT 0,
    decision_id TEXT NOT NULL,
    hash TEXT NOT NULL,
    ref INTEGER NOT NULL DEFAULT 0,
    time_us INTEGER NOT NULL,
    kid TEXT NOT NULL,
    jws TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS checkpoints_ref ON checkpoints (ref);
CREATE INDEX IF NOT EXISTS checkpoints_gateway ON checkpoints (gateway_id, seq);
CREATE TABLE IF NOT EXISTS audit_keys (
    kid TEXT PRIMARY KEY,
    jwk TEXT NOT NULL,
    added_us INTEGER NOT NULL
);
"""
#: Columns of schema version 3 in the tables of version 1 and 2 (added to older stores when opened).
EVIDENCE_COLUMNS = (
    ("decisions", "prev_hash", "TEXT NOT NULL DEFAULT ''"),
    ("decisions", "hash", "TEXT NOT NULL DEFAULT ''"),
    ("sessions", "head_seq", "INTEGER"),
    ("sessions", "head_hash", "TEXT"),
    ("sessions", "head_decision_id", "TEXT"),
    ("purges", "from_seq", "INTEGER NOT NULL DEFAULT 0"),
    ("purges", "head_hash", "TEXT NOT NULL DEFAULT ''"),
)


def ensure_evidence_schema(conn: sqlite3.Connection) -> None:
    """Tables and columns of the hash chain and checkpoints (inside ``ensure_schema``'s transaction)."""
    for statement in (s.strip() for s in EVIDENCE_DDL.split(";")):
        if statement:
            conn.execute(statement)
    present: dict[str, set[str]] = {}
    for table, name, definition in EVIDENCE_COLUMNS:
        if table not in present:
            present[table] = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        if name not in present[table]:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {name} {definition}")


def has_evidence_schema(conn: sqlite3.Connection) -> bool:
    found = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'checkpoints'").fetchone()
    return found is not None


def register_key(conn: sqlite3.Connection, signer: Signer) -> None:
    conn.execute(
        "INSERT OR IGNORE INTO audit_keys (kid, jwk, added_us) VALUES (?, ?, ?)",
        (signer.kid, json.dumps(signer.jwk, sort_keys=True), time.time_ns() // 1000),
    )


def stored_keys(conn: sqlite3.Connection) -> dict[str, Ed25519PublicKey]:
    if not has_evidence_schema(conn):
        return {}
    keys: dict[str, Ed25519PublicKey] = {}
    for row in conn.execute("SELECT kid, jwk FROM audit_keys"):
        try:
            keys[str(row[0])] = key_from_jwk(json.loads(row[1]))
        except ValueError:
            continue  # a broken entry verifies nothing
    return keys


def head_claims(gateway_id: str, seq: int, decision_id: str, hash_hex: str, time_us: int) -> dict[str, Any]:
    return {"kind": KIND_HEAD, "gateway_id": gateway_id, "seq": seq, "decision_id": decision_id,
            "hash": hash_hex, "time_us": time_us}


def insert_checkpoint(conn: sqlite3.Connection, signer: Signer, claims: dict[str, Any], ref: int = 0) -> str:
    token = signer.sign(claims, CHECKPOINT_TYP)
    conn.execute(
        "INSERT INTO checkpoints (kind, gateway_id, seq, from_seq, decision_id, hash, ref, time_us, kid, jws) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (claims["kind"], claims["gateway_id"], claims["seq"], claims.get("from_seq", 0), claims["decision_id"],
         claims["hash"], ref, claims["time_us"], signer.kid, token),
    )
    return token


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint or purge marker whose signature was checked."""

    kind: str
    gateway_id: str
    seq: int
    from_seq: int
    decision_id: str
    hash: str
    time_us: int
    kid: str
    jws: str

    @classmethod
    def from_claims(cls, claims: dict[str, Any], kid: str, token: str) -> Checkpoint:
        try:
            return cls(
                kind=str(claims["kind"]), gateway_id=str(claims["gateway_id"]), seq=int(claims["seq"]),
                from_seq=int(claims.get("from_seq", 0)), decision_id=str(claims["decision_id"]),
                hash=str(claims["hash"]), time_us=int(claims["time_us"]), kid=kid, jws=token,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a checkpoint: {exc}") from None


def parse_checkpoint(token: str, keys: dict[str, Ed25519PublicKey]) -> Checkpoint:
    """Check the signature of ``token`` against ``keys``; raises ``jwt.InvalidTokenError`` / ``ValueError``."""
    import jwt

    claims = verify_jws(token, keys)
    kid = str(jwt.get_unverified_header(token).get("kid"))
    checkpoint = Checkpoint.from_claims(claims, kid, token)
    if checkpoint.kind not in (KIND_HEAD, KIND_PURGE):
        raise ValueError(f"unknown checkpoint kind {checkpoint.kind!r}")
    return checkpoint


def exported_entry(token: str, jwk: dict[str, Any]) -> dict[str, Any]:
    """One line of a checkpoint file: the JWS and the public key it was signed with."""
    return {"jws": token, "jwk": jwk}


def store_entries(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    """Every checkpoint and purge marker of the store, as checkpoint-file entries, oldest first."""
    if not has_evidence_schema(conn):
        return []
    jwks = {str(r[0]): json.loads(r[1]) for r in conn.execute("SELECT kid, jwk FROM audit_keys")}
    return [exported_entry(str(r[1]), jwks.get(str(r[0]), {}))
            for r in conn.execute("SELECT kid, jws FROM checkpoints ORDER BY id")]


def read_entries(text: str) -> list[dict[str, Any]]:
    """A checkpoint file: JSON lines (or one JSON array) of ``{"jws", "jwk"}`` objects, or bare JWS strings."""
    stripped = text.strip()
    if not stripped:
        return []
    if stripped.startswith("["):
        items: list[Any] = json.loads(stripped)
    else:
        items = [json.loads(line) if line.lstrip().startswith("{") else line.strip()
                 for line in stripped.splitlines() if line.strip()]
    entries: list[dict[str, Any]] = []
    for item in items:
        if isinstance(item, str):
            entries.append({"jws": item})
        elif isinstance(item, dict) and isinstance(item.get("jws"), str):
            entries.append(item)
        else:
            raise ValueError("a checkpoint file holds {\"jws\": ..., \"jwk\": {...}} objects, one per line")
    return entries
