"""A data subject's access report: every decision that touched one person's data.

``gateway audit subject SUBJECT`` takes a contact id, an e-mail address or a mailbox user id (an
Entra oid). Records carry their data subjects as ``s:<kind>:<value>`` terms (``decision_terms``, the
same index as categories and policies) and, grouped per person, in ``extra["subjects"]``: one group
holds the keys one record (or one item of a list) gave for the same person, e.g. a contact's id and
its e-mail address, a call's id and its contact's id. The subject's keys are resolved through those
groups to a fixed point (bounded): an address finds the contact it belongs to, the contact finds its
calls, and the calls find their recordings' records. A list's other items are never merged in: only
the group that holds a known key is.

E-mail addresses are never stored in clear: the address given is canonicalised as the gateway does
(``gateway/authz/emails.py``) and turned into its keyed pseudonym with the gateway's pseudonym key
(``audit.pseudonym_key_file``), so the report needs the key and the store alone reveals nothing.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from gateway.audit.query import SHADOW_FIELDS, listing_row, window_clauses
from gateway.audit.schema import TERM_SUBJECT

MAX_ROUNDS = 6
MAX_KEYS = 2000
KINDS_BY_ID = ("contact", "call", "user")  # what a bare id may be

#: The fields of one line of a subject's report, in output order (at least section 2's JSON fields).
SUBJECT_FIELDS = (
    "decision_id", "time", "decision", "status", "reason", "tenant", "principal_kind", "principal", "roles",
    "action", "resource_type", "resource_id", "route", "purpose", "categories", "recipient", "masked_fields",
    "policies", "clauses",
)


@dataclass(frozen=True)
class SubjectReport:
    subject: str
    keys: tuple[str, ...]  # every key the subject was resolved to (pseudonyms for addresses)
    records: list[dict[str, Any]]

    @property
    def recipients(self) -> list[str]:
        """The parties outside the gateway's caller the data was exported to (X-Recipient)."""
        return sorted({r["recipient"] for r in self.records if r["recipient"] and r["decision"] == "allow"})

    @property
    def readers(self) -> list[tuple[str, str, int]]:
        """(principal kind, roles, allowed decisions) of who was given the data, most first."""
        counts: dict[tuple[str, str], int] = {}
        for r in self.records:
            if r["decision"] == "allow":
                who = (r["principal_kind"], ", ".join(r["roles"]) or "no role")
                counts[who] = counts.get(who, 0) + 1
        return sorted(((k, roles, n) for (k, roles), n in counts.items()), key=lambda x: (-x[2], x[0], x[1]))


def initial_keys(subject: str, pseudonym: Callable[[str], str] | None) -> list[str]:
    """The keys a SUBJECT argument may stand for; ``ValueError`` for an address without the key."""
    value = subject.strip()
    if not value:
        raise ValueError("SUBJECT must be a contact id, an e-mail address or a mailbox user id")
    if "@" in value:
        from gateway.authz.emails import canonical_email

        if pseudonym is None:
            raise ValueError("an e-mail address is found only with the gateway's pseudonym key")
        try:
            canonical = canonical_email(value)
        except ValueError as exc:
            raise ValueError(f"{value!r} is not an e-mail address: {exc}") from None
        return ["email:" + pseudonym(canonical)]
    keys = [f"{kind}:{value}" for kind in KINDS_BY_ID]
    if value.lower() != value:
        keys.append(f"user:{value.lower()}")  # object ids are case-insensitive GUIDs
    return keys


def _matching(conn: sqlite3.Connection, keys: Iterable[str], since_us: int | None, until_us: int | None) -> list[int]:
    terms = [TERM_SUBJECT + k for k in keys]
    out: set[int] = set()
    clauses, params = window_clauses(since_us, until_us)
    window = "".join(" AND " + c for c in clauses)
    for start in range(0, len(terms), 500):
        chunk = terms[start:start + 500]
        names = {f"k{i}": t for i, t in enumerate(chunk)}
        sql = f"SELECT ref FROM decision_terms WHERE term IN ({', '.join(':' + n for n in names)}){window}"
        out.update(row[0] for row in conn.execute(sql, {**names, **params}))
    return sorted(out)


def _groups(extra: str) -> list[list[str]]:
    try:
        raw = json.loads(extra).get("subjects")
        groups = json.loads(raw) if isinstance(raw, str) else []
    except (ValueError, AttributeError):
        return []
    return [g for g in groups if isinstance(g, list)]


def resolve_keys(
    conn: sqlite3.Connection, keys: Iterable[str], since_us: int | None = None, until_us: int | None = None
) -> tuple[set[str], list[int]]:
    """Every key of the subject (through the groups of the records that name one) and their records."""
    known = set(keys)
    frontier = set(known)
    refs: list[int] = []
    for _ in range(MAX_ROUNDS):
        refs = _matching(conn, known, since_us, until_us)
        found: set[str] = set()
        for start in range(0, len(refs), 500):
            chunk = refs[start:start + 500]
            marks = ", ".join("?" for _ in chunk)
            for (extra,) in conn.execute(f"SELECT extra FROM decisions WHERE id IN ({marks})", chunk):
                for group in _groups(extra):
                    if frontier.intersection(group) or known.intersection(group):
                        found.update(k for k in group if isinstance(k, str))
        new = found - known
        if not new or len(known) >= MAX_KEYS:
            break
        known |= set(list(new)[: MAX_KEYS - len(known)])
        frontier = new
    return known, _matching(conn, known, since_us, until_us)


def subject_report(
    conn: sqlite3.Connection, subject: str, pseudonym: Callable[[str], str] | None,
    since_us: int | None = None, until_us: int | None = None,
) -> SubjectReport:  # fmt: skip
    keys, refs = resolve_keys(conn, initial_keys(subject, pseudonym), since_us, until_us)
    records: list[dict[str, Any]] = []
    for start in range(0, len(refs), 500):
        chunk = refs[start:start + 500]
        marks = ", ".join("?" for _ in chunk)
        for row in conn.execute(f"SELECT * FROM decisions WHERE id IN ({marks})", chunk):
            records.append(_line(row))
    records.sort(key=lambda r: (r["time"], r["decision_id"]))
    return SubjectReport(subject, tuple(sorted(keys)), records)


def _line(row: sqlite3.Row) -> dict[str, Any]:
    """A listing's fields (``query.listing_row``), with what the decision hid and the clauses applied."""
    listed = {k: v for k, v in listing_row(row).items() if k not in SHADOW_FIELDS}
    return {
        **listed,
        "masked_fields": json.loads(row["masked_fields"]),
        "clauses": json.loads(row["clauses"]),
    }
