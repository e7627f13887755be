"""The hash chain of the decision log: the canonical form of a record, its links, and checking them.

Every record of one gateway id carries ``hash`` = SHA-256 over the 32 bytes of ``prev_hash`` (the
``hash`` of the previous stored record of the same gateway id, in sequence order; 32 zero bytes for
the first) followed by the record's canonical form. The canonical form is generic over the columns of
``decisions``: every stored column except ``id`` (the commit order, checked separately) and the two
chain columns, so a column added later is covered without changing this module. Exactly (README.md,
"Canonical form", says the same for an auditor who re-implements it):

* the included columns are those of ``PRAGMA table_info(decisions)`` except ``id``, ``prev_hash``,
  ``hash``, leaving out a column whose value is NULL or equal to its declared ``DEFAULT`` (so a
  record stored before a column existed reads back, with the default, exactly as it was hashed);
* names sorted by Unicode code point; the form is the JSON text ``[[names...],[values...]]`` with no
  whitespace, UTF-8: TEXT values as JSON strings (RFC 8259 escapes, lower-case ``\\u00xx`` for other
  control characters, nothing else escaped), INTEGER values as decimal integers, REAL values as a
  JSON string of the 16 lower-case hex digits of their IEEE 754 binary64 big-endian bytes (exact, and
  the same in every language); that text is also what RFC 8785 (JCS) gives for the same array;
* every column has INTEGER, REAL or TEXT affinity, and a value of another type in it is a break (a
  value SQLite converted on a direct edit would not hash the same anyway).

Trade-offs. The hash is computed by the writer thread, never on the event loop, from the row it is
about to insert; the row's values are first coerced to their column's type, and the coerced values
are what is inserted, so what was hashed is exactly what is stored. The JSON array is built by orjson
from a pre-sorted value list: its output for strings and integers is exactly the form above (compact,
UTF-8, the RFC 8259 escapes, lower-case ``\\u00xx``, nothing else escaped; ``tests/audit`` checks it
against an independent implementation and the standard library's encoder), at about a fifteenth of
the standard library encoder's cost per record (``make bench``: ``test_chain_link``); a lone
surrogate or an integer beyond 64 bits has no form (``ChainError``), as SQLite could not store it
either. A length-prefixed binary form would be no safer and slower in Python. The
chain proves order and integrity of what is stored; it cannot prove that nothing was dropped before
it was stored (the sequence numbers and sessions show that), and anyone who can write the file can
recompute a whole chain: only signed checkpoints held elsewhere (``checkpoints.py``) expose that.
"""

from __future__ import annotations

import hashlib
import operator
import sqlite3
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

GENESIS = "0" * 64
GENESIS_BYTES = bytes(32)
CHAIN_COLUMNS = ("prev_hash", "hash")
_EXCLUDED = frozenset({"id", *CHAIN_COLUMNS})
_NO_DEFAULT = object()
_ENCODE = orjson.dumps
_PACK_DOUBLE = struct.Struct(">d").pack


_Getter = Callable[[Sequence[Any]], tuple[Any, ...]]
_Plan = tuple[bytes, _Getter, tuple[int, ...]]


class ChainError(ValueError):
    """A value that has no canonical form (wrong type for its column, a lone surrogate, ...)."""


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    affinity: str  # INTEGER | REAL | TEXT
    default: Any  # the declared DEFAULT's value, or _NO_DEFAULT
    nullable: bool

    @property
    def optional(self) -> bool:
        return self.default is not _NO_DEFAULT or self.nullable


def affinity(declared: str) -> str:
    """SQLite's column affinity rules (section 3.1 of "Datatypes In SQLite")."""
    kind = declared.upper()
    if "INT" in kind:
        return "INTEGER"
    if "CHAR" in kind or "CLOB" in kind or "TEXT" in kind:
        return "TEXT"
    if "BLOB" in kind or not kind:
        return "BLOB"
    if "REAL" in kind or "FLOA" in kind or "DOUB" in kind:
        return "REAL"
    return "NUMERIC"


def _default(text: str | None) -> Any:
    """The value of a declared DEFAULT literal; _NO_DEFAULT for none or an expression."""
    if text is None:
        return _NO_DEFAULT
    literal = text.strip()
    if literal.upper() == "NULL":
        return None
    if len(literal) >= 2 and literal[0] == literal[-1] == "'":
        return literal[1:-1].replace("''", "'")
    try:
        return int(literal)
    except ValueError:
        pass
    try:
        return float(literal)
    except ValueError:
        return _NO_DEFAULT


def table_columns(conn: sqlite3.Connection) -> dict[str, Column]:
    """The hashed columns of ``decisions`` as the store declares them, by name."""
    columns: dict[str, Column] = {}
    for row in conn.execute("PRAGMA table_info(decisions)"):
        name = str(row[1])
        if name in _EXCLUDED:
            continue
        kind = affinity(str(row[2] or ""))
        if kind not in ("INTEGER", "REAL", "TEXT"):
            raise ChainError(f"decisions.{name} has {kind} affinity: the chain covers INTEGER, REAL and TEXT columns")
        columns[name] = Column(name, kind, _default(row[4]), nullable=not row[3])
    return columns


class Canonical:
    """The canonical form of rows whose values come in the order ``names``."""

    def __init__(self, names: Sequence[str], columns: dict[str, Column]) -> None:
        missing = [n for n in names if n not in columns]
        if missing:
            raise ChainError(f"decisions has no column {missing[0]!r}")
        self.names = tuple(names)
        self._order = sorted(range(len(names)), key=lambda i: names[i])
        self._sorted = [columns[names[i]] for i in self._order]
        types = {"INTEGER": int, "REAL": float, "TEXT": str}
        self._expected = tuple(types[c.affinity] for c in self._sorted)
        self._optional = [(j, c.default) for j, c in enumerate(self._sorted) if c.optional]
        self._sort = _getter(self._order)
        # per set of omitted columns: the form's prefix, the kept values, where the REAL ones are
        self._plans: dict[tuple[int, ...], _Plan] = {}

    def form(self, row: Sequence[Any], *, coerce: bool) -> tuple[bytes, tuple[Any, ...] | None]:
        """(the canonical bytes, the row coerced to its columns' types or None when unchanged).

        ``coerce`` (the writer): an int in a REAL column becomes a float, a bool or an integral float
        in an INTEGER column an int, and the caller inserts the coerced row. Without it (verify) a
        value of the wrong type raises ``ChainError``, as any other value without a canonical form.
        """
        values: Sequence[Any] = self._sort(row)
        coerced: tuple[Any, ...] | None = None
        if tuple(map(type, values)) != self._expected:
            values = self._coerce(list(values), coerce)
            if coerce:
                back: list[Any] = [None] * len(values)
                for j, i in enumerate(self._order):
                    back[i] = values[j]
                coerced = tuple(back)
        omitted = tuple(j for j, default in self._optional if values[j] is None or values[j] == default)
        plan = self._plans.get(omitted)
        if plan is None:
            plan = self._plans[omitted] = self._plan(omitted)
        prefix, keep, reals = plan
        kept: Sequence[Any] = keep(values)
        if reals:
            kept = list(kept)
            for k in reals:  # never None here: a NULL is omitted, or raised above where not allowed
                kept[k] = _PACK_DOUBLE(kept[k]).hex()
        try:
            return prefix + _ENCODE(kept) + b"]", coerced
        except (orjson.JSONEncodeError, ValueError, TypeError) as exc:
            raise ChainError(f"no canonical form: {exc}") from None

    def _plan(self, omitted: tuple[int, ...]) -> _Plan:
        skip = set(omitted)
        kept = [j for j in range(len(self._sorted)) if j not in skip]
        names = [self._sorted[j].name for j in kept]
        reals = tuple(k for k, j in enumerate(kept) if self._sorted[j].affinity == "REAL")
        return b"[" + _ENCODE(names) + b",", _getter(kept), reals

    def _coerce(self, values: list[Any], coerce: bool) -> list[Any]:
        out = list(values)
        for j, (value, column) in enumerate(zip(values, self._sorted, strict=True)):
            expected = self._expected[j]
            if type(value) is expected:
                continue
            if value is None and column.nullable:
                continue
            if coerce and column.affinity == "REAL" and type(value) in (int, bool):
                out[j] = float(value)
            elif coerce and column.affinity == "INTEGER" and (
                type(value) is bool or (type(value) is float and value.is_integer())
            ):
                out[j] = int(value)
            else:
                raise ChainError(
                    f"decisions.{column.name}: a {type(value).__name__} in a {column.affinity} column"
                )
        return out


def _getter(indexes: Sequence[int]) -> _Getter:
    """``row -> tuple(row[i] for i in indexes)``, in C."""
    if not indexes:
        return lambda row: ()
    if len(indexes) == 1:
        only = indexes[0]
        return lambda row: (row[only],)
    return operator.itemgetter(*indexes)


def link(prev: bytes, canonical: bytes) -> bytes:
    """The record's hash (32 bytes) from the previous record's hash (32 bytes) and its canonical form."""
    digest = hashlib.sha256(prev)
    digest.update(canonical)
    return digest.digest()


def record_hash(prev_hex: str, canonical: bytes) -> str:
    try:
        prev = bytes.fromhex(prev_hex)
    except ValueError:
        raise ChainError(f"prev_hash {prev_hex[:20]!r} is not hex") from None
    if len(prev) != 32:
        raise ChainError("prev_hash is not 32 bytes")
    return link(prev, canonical).hex()
