"""Audit queries over the SQLite store: filters, relative ages, listings, aggregates, one record.

Filters (all optional, combined with AND): a time window (``since`` inclusive, ``until`` exclusive),
principal (oid or app id), tenant (the principal's), decision, and three term filters answered
from ``decision_terms``: purpose and data category match the value or any descendant in the
dotted taxonomy (``--category user.contact`` finds ``user.contact.email``), policy matches exactly.
Listings are newest first (ties: larger decision id first), ``limit`` rows. Readers use their own
read-only connection, so they see a consistent snapshot while the gateway writes.

Size: every listing and aggregate an auditor can ask for, and the SQL each becomes, sit side by side
here so that one reading shows which indexes every query relies on (``schema.py`` defines them).
"""

from __future__ import annotations

import heapq
import itertools
import json
import re
import sqlite3
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from gateway.audit.schema import TERM_CATEGORY, TERM_POLICY, TERM_PURPOSE

DEFAULT_LIMIT = 100

#: The fields of a listed record, in output order (``--format json`` carries at least these).
QUERY_FIELDS = (
    "decision_id", "time", "decision", "status", "reason", "tenant", "principal_kind", "principal", "roles",
    "action", "resource_type", "resource_id", "purpose", "categories", "recipient", "policies", "method",
    "route", "path", "trace_id", "gateway_id", "sequence",
)
LIST_FIELDS = frozenset({"roles", "categories", "policies", "clauses", "masked_fields", "shadow_policies"})
#: With ``shadow_diff``: the shadow set's answer beside the enforced one.
SHADOW_FIELDS = ("shadow_decision", "shadow_policies")

#: ``--count-by`` dimensions: the term-table ones, then plain columns.
TERM_DIMENSIONS = {"category": TERM_CATEGORY, "policy": TERM_POLICY, "purpose": TERM_PURPOSE}
COLUMN_DIMENSIONS = {
    "principal": "principal_id", "tenant": "tenant", "decision": "decision", "status": "status",
    "action": "action", "route": "route", "reason": "reason",
}
COUNT_DIMENSIONS = tuple(TERM_DIMENSIONS) + tuple(COLUMN_DIMENSIONS)
BUCKETS = {"day": 86_400_000_000, "hour": 3_600_000_000}

_AGE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*", re.IGNORECASE)
_AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}

_SELECT = (
    "SELECT d.decision_id, d.time_us, d.decision, d.status, d.reason, d.tenant, d.principal_kind, "
    "d.principal_id, d.roles, d.action, d.resource_type, d.resource_id, d.purpose, d.categories, d.recipient, "
    "d.policies, d.method, d.route, d.path, d.trace_id, d.gateway_id, d.seq FROM decisions d"
)
_SELECT_SHADOW = _SELECT.replace(" FROM decisions d", ", d.shadow_decision, d.shadow_policies FROM decisions d")


class QueryError(ValueError):
    """A filter or time argument that cannot be understood."""


@dataclass(frozen=True)
class AuditFilter:
    since_us: int | None = None
    until_us: int | None = None
    principal: str | None = None
    tenant: str | None = None
    purpose: str | None = None
    category: str | None = None
    decision: str | None = None
    policy: str | None = None
    limit: int = DEFAULT_LIMIT
    shadow_diff: bool = False  # only the records whose shadow decision differs from the enforced one

    def __post_init__(self) -> None:
        if self.decision is not None and self.decision not in ("allow", "deny"):
            raise QueryError(f"decision must be allow or deny, not {self.decision!r}")
        if self.limit < 0:
            raise QueryError("limit must not be negative")


# -- times ---------------------------------------------------------------------------------------------


def parse_age(value: str) -> float:
    """Seconds in a relative age such as ``15m``, ``2h``, ``7d``, ``1w``, ``30s``."""
    match = _AGE.fullmatch(value)
    if match is None:
        raise QueryError(f"not an age (like 15m, 2h, 7d): {value!r}")
    return float(match.group(1)) * _AGE_UNITS[match.group(2).lower()]


def parse_time(value: str, now: float | None = None) -> int:
    """Microseconds since the epoch for an RFC 3339 time or a relative age before ``now``."""
    if _AGE.fullmatch(value):
        reference = time.time() if now is None else now
        return round((reference - parse_age(value)) * 1_000_000)
    text = value.strip()
    if text.endswith(("z", "Z")):
        text = text[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise QueryError(f"not an RFC 3339 time or an age (like 15m, 2h, 7d): {value!r}") from None
    if moment.tzinfo is None:
        raise QueryError(f"an RFC 3339 time needs a UTC offset or Z: {value!r}")
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def rfc3339(time_us: int) -> str:
    """UTC, millisecond precision (truncated), e.g. ``2025-01-31T12:00:00.123Z``."""
    seconds, micros = divmod(time_us, 1_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{micros // 1000:03d}Z"


def bucket_label(bucket: int, per: str) -> str:
    start = time.gmtime(bucket * BUCKETS[per] // 1_000_000)
    return time.strftime("%Y-%m-%d" if per == "day" else "%Y-%m-%dT%H:00Z", start)


# -- SQL building --------------------------------------------------------------------------------------


def _term_range(prefix: str, value: str, hierarchical: bool) -> tuple[str, dict[str, str]]:
    """A condition on ``term`` matching ``value`` (and its dotted descendants) as one index range."""
    exact = prefix + value
    if not hierarchical:
        return "term = :{0}", {"": exact}
    # [v, v + "/") holds v, v + "." + anything, and a few siblings such as "v-x"; the OR drops those.
    return "term >= :{0} AND term < :{0}_hi AND (term = :{0} OR term >= :{0}_lo)", {
        "": exact, "_lo": exact + ".", "_hi": exact + "/",
    }


def _term_filters(flt: AuditFilter) -> list[tuple[str, str, bool]]:
    out = []
    if flt.purpose:
        out.append((TERM_PURPOSE, flt.purpose, True))
    if flt.category:
        out.append((TERM_CATEGORY, flt.category, True))
    if flt.policy:
        out.append((TERM_POLICY, flt.policy, False))
    return out


def window_clauses(
    since_us: int | None, until_us: int | None, column: str = "time_us"
) -> tuple[list[str], dict[str, Any]]:
    """``since`` inclusive, ``until`` exclusive, on ``column``: SQL conditions and their parameters."""
    clauses: list[str] = []
    params: dict[str, Any] = {}
    if since_us is not None:
        clauses.append(f"{column} >= :since")
        params["since"] = since_us
    if until_us is not None:
        clauses.append(f"{column} < :until")
        params["until"] = until_us
    return clauses, params


def _where(flt: AuditFilter, *, skip_term: str | None = None, ref: str = "d.id") -> tuple[list[str], dict[str, Any]]:
    clauses, params = window_clauses(flt.since_us, flt.until_us, "d.time_us")
    if flt.principal:
        clauses.append("d.principal_id = :principal")
        params["principal"] = flt.principal
    if flt.tenant:
        clauses.append("d.tenant = :tenant")
        params["tenant"] = flt.tenant
    if flt.decision:
        clauses.append("d.decision = :decision")
        params["decision"] = flt.decision
    if flt.shadow_diff:
        clauses.append("d.shadow_decision != '' AND d.shadow_decision != d.decision")
    for index, (prefix, value, hierarchical) in enumerate(_term_filters(flt)):
        if prefix == skip_term:
            continue
        name = f"t{index}"
        condition, values = _term_range(prefix, value, hierarchical)
        window = ""
        if flt.since_us is not None:
            window += " AND time_us >= :since"
        if flt.until_us is not None:
            window += " AND time_us < :until"
        clauses.append(f"{ref} IN (SELECT ref FROM decision_terms WHERE {condition.format(name)}{window})")
        params.update({name + suffix: v for suffix, v in values.items()})
    return clauses, params


def listing_row(row: sqlite3.Row) -> dict[str, Any]:
    return {
        "decision_id": row["decision_id"],
        "time": rfc3339(row["time_us"]),
        "decision": row["decision"],
        "status": row["status"],
        "reason": row["reason"],
        "tenant": row["tenant"],
        "principal_kind": row["principal_kind"],
        "principal": row["principal_id"],
        "roles": json.loads(row["roles"]),
        "action": row["action"],
        "resource_type": row["resource_type"],
        "resource_id": row["resource_id"],
        "purpose": row["purpose"],
        "categories": json.loads(row["categories"]),
        "recipient": row["recipient"],
        "policies": json.loads(row["policies"]),
        "method": row["method"],
        "route": row["route"],
        "path": row["path"],
        "trace_id": row["trace_id"],
        "gateway_id": row["gateway_id"],
        "sequence": row["seq"],
        **({name: (json.loads(row[name]) if name in LIST_FIELDS else row[name]) for name in SHADOW_FIELDS}
           if "shadow_decision" in row.keys() else {}),  # noqa: SIM118
    }


def has_column(conn: sqlite3.Connection, name: str) -> bool:
    """Whether the store's decisions table has ``name`` (stores of schema version 1, never opened by a
    writer of this version, lack the replay and shadow columns)."""
    return any(row[1] == name for row in conn.execute("PRAGMA table_info(decisions)"))


def query_decisions(conn: sqlite3.Connection, flt: AuditFilter) -> list[dict[str, Any]]:
    """The matching records, newest first (ties: larger decision id first), at most ``flt.limit``.

    Which index drives the search matters at millions of rows: with a principal, the
    (principal, time) index; else with a term filter (purpose, category, policy), the term table,
    merging each matching term's time-ordered range and checking the other filters on the way;
    else the time index.
    """
    if flt.limit == 0:
        return []
    if flt.shadow_diff and not has_column(conn, "shadow_decision"):
        return []  # a store no shadow set ever wrote to
    expanded = []
    for prefix, value, hierarchical in _term_filters(flt):
        terms = expand_terms(conn, prefix, value, hierarchical)
        if not terms:
            return []
        expanded.append(terms)
    if expanded and not flt.principal:
        rows = _query_by_terms(conn, flt, expanded)
    else:
        clauses, params = _where(_without_terms(flt))
        for index, terms in enumerate(expanded):
            clauses.append(_exists(terms, f"x{index}_", params))
        sql = _SELECT_SHADOW if flt.shadow_diff else _SELECT
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        sql += " ORDER BY d.time_us DESC, d.decision_id DESC LIMIT :limit"
        params["limit"] = flt.limit
        rows = conn.execute(sql, params).fetchall()
    return [listing_row(row) for row in rows]


def expand_terms(conn: sqlite3.Connection, prefix: str, value: str, hierarchical: bool) -> list[str]:
    """The distinct stored terms a filter matches (index seeks, one per distinct term)."""
    if not hierarchical:
        found = conn.execute("SELECT 1 FROM decision_terms WHERE term = ? LIMIT 1", (prefix + value,)).fetchone()
        return [prefix + value] if found else []
    exact, low, high = prefix + value, prefix + value + ".", prefix + value + "/"
    terms = []
    if conn.execute("SELECT 1 FROM decision_terms WHERE term = ? LIMIT 1", (exact,)).fetchone():
        terms.append(exact)
    term = conn.execute(
        "SELECT min(term) FROM decision_terms WHERE term >= ? AND term < ?", (low, high)
    ).fetchone()[0]
    while term is not None:
        terms.append(term)
        term = conn.execute(
            "SELECT min(term) FROM decision_terms WHERE term > ? AND term < ?", (term, high)
        ).fetchone()[0]
    return terms


def _without_terms(flt: AuditFilter) -> AuditFilter:
    return AuditFilter(since_us=flt.since_us, until_us=flt.until_us, principal=flt.principal,
                       tenant=flt.tenant, decision=flt.decision, limit=flt.limit, shadow_diff=flt.shadow_diff)


def _exists(terms: list[str], name: str, params: dict[str, Any]) -> str:
    placeholders = []
    for index, term in enumerate(terms):
        params[f"{name}{index}"] = term
        placeholders.append(f":{name}{index}")
    return (
        f"EXISTS (SELECT 1 FROM decision_terms WHERE term IN ({', '.join(placeholders)}) "
        "AND time_us = d.time_us AND ref = d.id)"
    )


_TERM_ESTIMATE_CAP = 20_000
_CANDIDATE_CHUNK = 256


def _query_by_terms(conn: sqlite3.Connection, flt: AuditFilter, expanded: list[list[str]]) -> list[sqlite3.Row]:
    window = ""
    window_params: dict[str, Any] = {}
    if flt.since_us is not None:
        window += " AND time_us >= :since"
        window_params["since"] = flt.since_us
    if flt.until_us is not None:
        window += " AND time_us < :until"
        window_params["until"] = flt.until_us

    def estimate(terms: list[str]) -> int:
        params: dict[str, Any] = dict(window_params)
        listed = ", ".join(f":e{i}" for i in range(len(terms)))
        params.update({f"e{i}": t for i, t in enumerate(terms)})
        sql = (f"SELECT count(*) FROM (SELECT 1 FROM decision_terms WHERE term IN ({listed}){window} "
               f"LIMIT {_TERM_ESTIMATE_CAP})")
        return int(conn.execute(sql, params).fetchone()[0])

    driver = min(range(len(expanded)), key=lambda i: estimate(expanded[i]) if len(expanded) > 1 else 0)
    streams = []
    for term in expanded[driver]:
        cursor = conn.cursor()
        cursor.row_factory = None
        cursor.execute(
            f"SELECT time_us, ref FROM decision_terms WHERE term = :term{window} ORDER BY time_us DESC, ref DESC",
            {"term": term, **window_params},
        )
        streams.append(cursor)
    candidates = heapq.merge(*streams, reverse=True)

    clauses, params = _where(_without_terms(flt))
    for index, terms in enumerate(expanded):
        if index != driver:
            clauses.append(_exists(terms, f"x{index}_", params))
    found: list[sqlite3.Row] = []
    while True:
        chunk = list(itertools.islice(candidates, _CANDIDATE_CHUNK))
        if not chunk:
            break
        ids = {f"c{i}": ref for i, (_, ref) in enumerate(chunk)}
        condition = f"d.id IN ({', '.join(':' + k for k in ids)})"
        sql = f"{_SELECT_SHADOW if flt.shadow_diff else _SELECT} WHERE {' AND '.join([condition, *clauses])}"
        found.extend(conn.execute(sql, {**params, **ids}).fetchall())
        if len(found) >= flt.limit:
            found.sort(key=lambda r: (r["time_us"], r["decision_id"]), reverse=True)
            del found[flt.limit:]
            if chunk[-1][0] < found[-1]["time_us"]:
                break  # every later candidate is older than the oldest kept
    for cursor in streams:
        cursor.close()
    found.sort(key=lambda r: (r["time_us"], r["decision_id"]), reverse=True)
    return found[: flt.limit]


def count_decisions(
    conn: sqlite3.Connection, flt: AuditFilter, by: str, per: str | None = None
) -> list[dict[str, Any]]:
    """Counts of matching records by one dimension (and per day or hour), ordered by bucket then key.

    By category or policy a record counts once under each of its categories (policies). With
    ``--category C`` and ``by="category"``, only C and its descendants are counted.
    """
    if by not in COUNT_DIMENSIONS:
        raise QueryError(f"cannot count by {by!r}; choose one of {', '.join(COUNT_DIMENSIONS)}")
    if per is not None and per not in BUCKETS:
        raise QueryError(f"per must be day or hour, not {per!r}")
    bucket_size = BUCKETS[per] if per else 0
    if by in TERM_DIMENSIONS:
        sql, params = _count_terms_sql(flt, by, bucket_size)
    else:
        sql, params = _count_column_sql(flt, COLUMN_DIMENSIONS[by], bucket_size)
    out: list[dict[str, Any]] = []
    for key, bucket, count in conn.execute(sql, params):
        row: dict[str, Any] = {by: key}
        if per:
            row[per] = bucket_label(int(bucket), per)
        row["count"] = count
        out.append(row)
    return out


def _count_terms_sql(flt: AuditFilter, by: str, bucket_size: int) -> tuple[str, dict[str, Any]]:
    prefix = TERM_DIMENSIONS[by]
    own_filter = {"category": flt.category, "purpose": flt.purpose, "policy": flt.policy}[by]
    params: dict[str, Any] = {"plen": len(prefix) + 1, "bucket": bucket_size or 1}
    if own_filter:
        condition, values = _term_range(prefix, own_filter, hierarchical=by != "policy")
        clauses = [condition.format("own").replace("term", "t.term")]
        params.update({"own" + suffix: v for suffix, v in values.items()})
    else:
        # every term of this kind: the prefix ("c:") up to the next character (";")
        clauses = ["t.term >= :kind_lo AND t.term < :kind_hi"]
        params.update({"kind_lo": prefix, "kind_hi": prefix[:-1] + chr(ord(prefix[-1]) + 1)})
    # the term table carries time and outcome, so the common filters need no join
    if flt.since_us is not None:
        clauses.append("t.time_us >= :since")
        params["since"] = flt.since_us
    if flt.until_us is not None:
        clauses.append("t.time_us < :until")
        params["until"] = flt.until_us
    if flt.decision:
        # a literal, so that the partial index over denials can be used
        clauses.append("t.denied = 1" if flt.decision == "deny" else "t.denied = 0")
    rest = AuditFilter(principal=flt.principal, tenant=flt.tenant, purpose=flt.purpose,
                       category=flt.category, policy=flt.policy)
    other_clauses, other_params = _where(rest, skip_term=prefix, ref="t.ref")
    join = ""
    if flt.principal or flt.tenant:
        join = " JOIN decisions d ON d.id = t.ref"
    clauses.extend(other_clauses)
    params.update(other_params)
    bucket = "t.time_us / :bucket" if bucket_size else "0"
    sql = (
        f"SELECT substr(t.term, :plen) AS key, {bucket} AS bucket, count(*) AS n FROM decision_terms t{join} "
        f"WHERE {' AND '.join(clauses)} GROUP BY key, bucket ORDER BY bucket, key"
    )
    return sql, params


def _count_column_sql(flt: AuditFilter, column: str, bucket_size: int) -> tuple[str, dict[str, Any]]:
    clauses, params = _where(flt)
    bucket = "d.time_us / :bucket" if bucket_size else "0"
    params["bucket"] = bucket_size or 1
    where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
    sql = (
        f"SELECT d.{column} AS key, {bucket} AS bucket, count(*) AS n FROM decisions d{where} "
        "GROUP BY key, bucket ORDER BY bucket, key"
    )
    return sql, params


# -- one record ----------------------------------------------------------------------------------------


def show_decision(conn: sqlite3.Connection, decision_id: str) -> dict[str, Any] | None:
    """Every stored field of one decision (lists as lists, ``extra`` as an object), or None."""
    row = conn.execute("SELECT * FROM decisions WHERE decision_id = ?", (decision_id.strip().lower(),)).fetchone()
    if row is None:
        return None
    out: dict[str, Any] = {}
    for key in row.keys():  # noqa: SIM118 (sqlite3.Row iterates values)
        value = row[key]
        if key == "id":
            continue
        if key == "time_us":
            out["time"] = rfc3339(value)
        elif key in LIST_FIELDS or key == "extra":
            value = json.loads(value)
        elif key == "inputs":
            value = json.loads(value) if value else None
        elif key == "seq":
            key = "sequence"
        elif key == "principal_id":
            key = "principal"
        out[key] = value
    return out
