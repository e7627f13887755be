"""The audit queries as ClickHouse SQL over the OpenTelemetry Collector's ``clickhouse`` exporter schema.

Many gateways export their ``authz.decision`` spans to a Collector that writes ``otel_traces``
(``Timestamp DateTime64(9)``, ``SpanName``, ``TraceId``, ``SpanAttributes Map(LowCardinality(String),
String)``, ...). The exporter stores every attribute value as a string: numbers in decimal, string
arrays as JSON (``["a","b"]``), so lists are read with ``JSONExtract(..., 'Array(String)')``.

The generated SQL answers the same questions as the SQLite engine with the same fields, order and
semantics (hierarchical purpose and category, exact policy, ``since`` inclusive, ``until``
exclusive, newest first). Delivery to the Collector is at least once, so listings keep one row per
span id and counts count distinct span ids. Times are written as absolute instants, so the text
printed is reproducible.
"""

from __future__ import annotations

from gateway.audit import spans as attr
from gateway.audit.query import BUCKETS, COUNT_DIMENSIONS, AuditFilter, QueryError

DEFAULT_TABLE = "otel_traces"
FORMATS = {
    "json": "SETTINGS output_format_json_array_of_rows = 1, output_format_json_quote_64bit_integers = 0 "
    "FORMAT JSONEachRow",
    "csv": "FORMAT CSVWithNames",
    "table": "FORMAT PrettyCompactMonoBlock",
}

_LIST_ATTRIBUTES = {attr.USER_ROLES, attr.DATA_CATEGORIES, attr.POLICY_IDS}
_DIMENSION_ATTRIBUTES = {
    "category": attr.DATA_CATEGORIES,
    "policy": attr.POLICY_IDS,
    "purpose": attr.PURPOSE,
    "principal": attr.ENDUSER_ID,
    "tenant": attr.PRINCIPAL_TENANT,
    "decision": attr.DECISION_OUTCOME,
    "status": attr.HTTP_RESPONSE_STATUS_CODE,
    "action": attr.ACTION,
    "route": attr.HTTP_ROUTE,
    "reason": attr.DECISION_REASON,
}


def quote(value: str) -> str:
    """A ClickHouse string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _identifier(table: str) -> str:
    parts = table.split(".")
    if not all(part and part.replace("_", "").isalnum() for part in parts) or len(parts) > 2:
        raise QueryError(f"not a table name: {table!r}")
    return ".".join(f"`{part}`" for part in parts)


def _a(key: str) -> str:
    return f"SpanAttributes[{quote(key)}]"


def _list(key: str) -> str:
    return f"JSONExtract({_a(key)}, 'Array(String)')"


def _matches_tree(expression: str, value: str) -> str:
    return f"({expression} = {quote(value)} OR startsWith({expression}, {quote(value + '.')}))"


def _time(micros: int) -> str:
    return f"fromUnixTimestamp64Micro(toInt64({micros}), 'UTC')"


def _where(flt: AuditFilter) -> list[str]:
    clauses = [f"SpanName = {quote(attr.SPAN_NAME)}"]
    if flt.since_us is not None:
        clauses.append(f"Timestamp >= {_time(flt.since_us)}")
    if flt.until_us is not None:
        clauses.append(f"Timestamp < {_time(flt.until_us)}")
    if flt.principal:
        clauses.append(f"{_a(attr.ENDUSER_ID)} = {quote(flt.principal)}")
    if flt.tenant:
        clauses.append(f"{_a(attr.PRINCIPAL_TENANT)} = {quote(flt.tenant)}")
    if flt.decision:
        clauses.append(f"{_a(attr.DECISION_OUTCOME)} = {quote(flt.decision)}")
    if flt.purpose:
        clauses.append(_matches_tree(_a(attr.PURPOSE), flt.purpose))
    if flt.category:
        clauses.append(f"arrayExists(c -> {_matches_tree('c', flt.category)}, {_list(attr.DATA_CATEGORIES)})")
    if flt.policy:
        clauses.append(f"has({_list(attr.POLICY_IDS)}, {quote(flt.policy)})")
    return clauses


_TIME_RFC3339 = (
    "concat(formatDateTime(Timestamp, '%Y-%m-%dT%H:%i:%S', 'UTC'), '.', "
    "leftPad(toString(toUnixTimestamp64Milli(Timestamp) % 1000), 3, '0'), 'Z')"
)

_LISTING_COLUMNS = (
    ("decision_id", _a(attr.DECISION_ID)),
    ("time", _TIME_RFC3339),
    ("decision", _a(attr.DECISION_OUTCOME)),
    ("status", f"toUInt16OrZero({_a(attr.HTTP_RESPONSE_STATUS_CODE)})"),
    ("reason", _a(attr.DECISION_REASON)),
    ("tenant", _a(attr.PRINCIPAL_TENANT)),
    ("principal_kind", _a(attr.PRINCIPAL_KIND)),
    ("principal", _a(attr.ENDUSER_ID)),
    ("roles", _list(attr.USER_ROLES)),
    ("action", _a(attr.ACTION)),
    ("resource_type", _a(attr.RESOURCE_TYPE)),
    ("resource_id", _a(attr.RESOURCE_ID)),
    ("purpose", _a(attr.PURPOSE)),
    ("categories", _list(attr.DATA_CATEGORIES)),
    ("recipient", _a(attr.RECIPIENT)),
    ("policies", _list(attr.POLICY_IDS)),
    ("method", _a(attr.HTTP_REQUEST_METHOD)),
    ("route", _a(attr.HTTP_ROUTE)),
    ("path", _a(attr.URL_PATH)),
    ("trace_id", "TraceId"),
    ("gateway_id", _a(attr.GATEWAY_ID)),
    ("sequence", f"toUInt64OrZero({_a(attr.GATEWAY_SEQUENCE)})"),
)


def clickhouse_query(flt: AuditFilter, *, table: str = DEFAULT_TABLE, fmt: str = "json") -> str:
    """``gateway audit query`` as one ClickHouse statement (fields as in ``query.QUERY_FIELDS``)."""
    columns = ",\n  ".join(f"{expression} AS {name}" for name, expression in _LISTING_COLUMNS)
    where = "\n  AND ".join(_where(flt))
    return (
        f"SELECT\n  {columns}\nFROM {_identifier(table)}\nWHERE {where}\n"
        f"ORDER BY Timestamp DESC, decision_id DESC\nLIMIT 1 BY SpanId\nLIMIT {int(flt.limit)}\n{_format(fmt)}"
    )


def clickhouse_count(
    flt: AuditFilter, by: str, per: str | None = None, *, table: str = DEFAULT_TABLE, fmt: str = "json"
) -> str:
    """``gateway audit query --count-by BY [--per day|hour]`` as one ClickHouse statement."""
    if by not in COUNT_DIMENSIONS:
        raise QueryError(f"cannot count by {by!r}; choose one of {', '.join(COUNT_DIMENSIONS)}")
    if per is not None and per not in BUCKETS:
        raise QueryError(f"per must be day or hour, not {per!r}")
    key_attribute = _DIMENSION_ATTRIBUTES[by]
    where = _where(flt)
    if by == "purpose":
        where.append(f"{_a(attr.PURPOSE)} != ''")  # like the SQLite term table: no purpose, no count
    conditions = "\n  AND ".join(where)
    if key_attribute in _LIST_ATTRIBUTES:
        key = f"arrayJoin({_list(key_attribute)})"
    elif by == "status":
        key = f"toUInt16OrZero({_a(key_attribute)})"
    else:
        key = _a(key_attribute)
    select = [f"{key} AS `{by}`"]
    group = [f"`{by}`"]
    order = [f"`{by}`"]
    if per == "day":
        select.append("toString(toDate(Timestamp, 'UTC')) AS day")
        group.insert(0, "day")
        order.insert(0, "day")
    elif per == "hour":
        select.append("formatDateTime(toStartOfHour(Timestamp, 'UTC'), '%Y-%m-%dT%H:00Z', 'UTC') AS hour")
        group.insert(0, "hour")
        order.insert(0, "hour")
    select.append("uniqExact(SpanId) AS count")
    having = ""
    if by == "category" and flt.category:
        having = f"\nHAVING {_matches_tree('`category`', flt.category)}"
    elif by == "policy" and flt.policy:
        having = f"\nHAVING `policy` = {quote(flt.policy)}"
    return (
        f"SELECT {', '.join(select)}\nFROM {_identifier(table)}\nWHERE {conditions}\n"
        f"GROUP BY {', '.join(group)}{having}\nORDER BY {', '.join(order)}\n{_format(fmt)}"
    )


def _format(fmt: str) -> str:
    try:
        return FORMATS[fmt]
    except KeyError:
        raise QueryError(f"format must be one of {', '.join(FORMATS)}") from None


# --- auditors' reports ---------------------------------------------------------------------------------

SUBJECTS_ATTRIBUTE = attr.EXTRA_PREFIX + "subjects"
LINK_ROUNDS = 3


def _subject_groups() -> str:
    return f"JSONExtract({_a(SUBJECTS_ATTRIBUTE)}, 'Array(Array(String))')"


def clickhouse_subject(
    keys: list[str], flt: AuditFilter, *, table: str = DEFAULT_TABLE, fmt: str = "json"
) -> str:
    """``gateway audit subject``: the decisions whose subjects hold one of ``keys`` (pseudonyms already
    made), linked through the records' subject groups for ``LINK_ROUNDS`` rounds, as the SQLite engine
    links them (which goes on to a fixed point; three rounds reach a contact's calls' recordings)."""
    source = _identifier(table)
    where = _where(flt)
    scope = " AND ".join(where)
    rounds = [f"[{', '.join(quote(k) for k in keys)}] AS k0"]
    for i in range(1, LINK_ROUNDS + 1):
        prev = f"k{i - 1}"
        rounds.append(
            f"arrayDistinct(arrayConcat({prev}, (SELECT groupUniqArrayArray(arrayFlatten(arrayFilter("
            f"g -> hasAny(g, {prev}), {_subject_groups()}))) FROM {source} WHERE {scope}))) AS k{i}"
        )
    columns = ",\n  ".join(f"{expression} AS {name}" for name, expression in _SUBJECT_COLUMNS)
    conditions = "\n  AND ".join([*where, f"hasAny(arrayFlatten({_subject_groups()}), k{LINK_ROUNDS})"])
    with_clause = ",\n  ".join(rounds)
    return (
        f"WITH\n  {with_clause}\nSELECT\n  {columns}\nFROM {source}\nWHERE {conditions}\n"
        f"ORDER BY Timestamp, decision_id\nLIMIT 1 BY SpanId\n{_format(fmt)}"
    )


_SUBJECT_COLUMNS = (
    *_LISTING_COLUMNS,
    ("masked_fields", _list(attr.MASKED_FIELDS)),
    ("clauses", _list(attr.POLICY_CLAUSES)),
)


def clickhouse_report(flt: AuditFilter, sensitive: tuple[str, ...], *, table: str = DEFAULT_TABLE) -> str:
    """``gateway audit report``'s numbers as ClickHouse statements, one per section, in its order."""
    from dataclasses import replace

    source = _identifier(table)
    denied = replace(flt, decision="deny")
    statements = [
        "-- decisions per day, by outcome\n" + clickhouse_count(flt, "decision", "day", table=table),
        "-- refusals by data category\n" + clickhouse_count(denied, "category", table=table),
        "-- refusals by purpose\n" + clickhouse_count(denied, "purpose", table=table),
    ]
    for category in sensitive:
        allowed = replace(flt, decision="allow", category=category)
        statements.append(f"-- principals given {category}\n" + clickhouse_count(allowed, "principal", table=table))
    where = "\n  AND ".join([*_where(flt), f"length({_list(attr.MASKED_FIELDS)}) > 0"])
    statements.append(
        "-- masked fields per day\n"
        f"SELECT toString(toDate(Timestamp, 'UTC')) AS day, sum(length({_list(attr.MASKED_FIELDS)})) AS masked, "
        f"uniqExact(SpanId) AS decisions\nFROM (SELECT * FROM {source} WHERE {where} LIMIT 1 BY SpanId)\n"
        f"GROUP BY day\nORDER BY day\n{_format('json')}"
    )
    scope = "\n  AND ".join([*_where(flt), f"{_a(attr.POLICY_SET_HASH)} != ''"])
    statements.append(
        "-- policy sets in force\n"
        f"SELECT {_a(attr.POLICY_SET_HASH)} AS policy_set, min({_TIME_RFC3339}) AS first, "
        f"max({_TIME_RFC3339}) AS last, uniqExact(SpanId) AS decisions\nFROM {source}\nWHERE {scope}\n"
        f"GROUP BY policy_set\nORDER BY first\n{_format('json')}"
    )
    return ";\n\n".join(statements) + ";"
