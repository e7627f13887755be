"""``--engine clickhouse``: the same answers from the OpenTelemetry Collector's ClickHouse schema.

An in-process ClickHouse (chdb) runs the ``otel_traces`` DDL of the Collector's ``clickhouse``
exporter. The rows are made the way that exporter makes them: our spans go through the OTLP
encoder (as they would on the wire), then each span becomes one row with ``Timestamp`` = start,
``Duration`` in nanoseconds, ``ServiceName`` from the resource and every attribute value converted
to a string as the exporter does (``pcommon.Value.AsString``: numbers in decimal, arrays as JSON).
Some spans are inserted twice, as an at-least-once pipeline may deliver them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from chdb import session as chdb_session
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from gateway.audit.clickhouse import clickhouse_count, clickhouse_query, quote
from gateway.audit.query import AuditFilter, count_decisions, query_decisions
from gateway.audit.record import DecisionRecord
from gateway.audit.schema import connect_reader
from gateway.audit.spans import build_span, span_resource

from .corpus import filters, random_records
from .helpers import running
from .helpers import settings as audit_settings

# The traces table of the Collector's clickhouse exporter (default table name, MergeTree, no TTL).
OTEL_TRACES_DDL = """
CREATE TABLE otel_traces (
    Timestamp DateTime64(9) CODEC(Delta, ZSTD(1)),
    TraceId String CODEC(ZSTD(1)),
    SpanId String CODEC(ZSTD(1)),
    ParentSpanId String CODEC(ZSTD(1)),
    TraceState String CODEC(ZSTD(1)),
    SpanName LowCardinality(String) CODEC(ZSTD(1)),
    SpanKind LowCardinality(String) CODEC(ZSTD(1)),
    ServiceName LowCardinality(String) CODEC(ZSTD(1)),
    ResourceAttributes Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    ScopeName String CODEC(ZSTD(1)),
    ScopeVersion String CODEC(ZSTD(1)),
    SpanAttributes Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    Duration UInt64 CODEC(ZSTD(1)),
    StatusCode LowCardinality(String) CODEC(ZSTD(1)),
    StatusMessage String CODEC(ZSTD(1)),
    Events Nested (Timestamp DateTime64(9), Name LowCardinality(String),
                   Attributes Map(LowCardinality(String), String)) CODEC(ZSTD(1)),
    Links Nested (TraceId String, SpanId String, TraceState String,
                  Attributes Map(LowCardinality(String), String)) CODEC(ZSTD(1)),
    INDEX idx_trace_id TraceId TYPE bloom_filter(0.001) GRANULARITY 1,
    INDEX idx_res_attr_key mapKeys(ResourceAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_res_attr_value mapValues(ResourceAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_span_attr_key mapKeys(SpanAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_span_attr_value mapValues(SpanAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_duration Duration TYPE minmax GRANULARITY 1
) ENGINE = MergeTree()
PARTITION BY toDate(Timestamp)
ORDER BY (ServiceName, SpanName, toDateTime(Timestamp))
SETTINGS index_granularity = 8192, ttl_only_drop_parts = 1
"""

SPAN_KINDS = {0: "Unspecified", 1: "Internal", 2: "Server", 3: "Client", 4: "Producer", 5: "Consumer"}
STATUS_CODES = {0: "Unset", 1: "Ok", 2: "Error"}


def as_string(value: AnyValue) -> str:
    """pcommon.Value.AsString for the value types our spans carry."""
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    if kind == "int_value":
        return str(value.int_value)
    if kind == "bool_value":
        return "true" if value.bool_value else "false"
    if kind == "double_value":
        return repr(value.double_value).removesuffix(".0")
    if kind == "array_value":
        return json.dumps([_raw(v) for v in value.array_value.values], separators=(",", ":"))
    raise AssertionError(f"unexpected attribute value type {kind}")


def _raw(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    assert kind is not None
    return getattr(value, kind)


def exporter_rows(records: list[DecisionRecord]) -> list[dict[str, Any]]:
    resource = span_resource("privacy-gateway", "gw-test")
    request = encode_spans([build_span(rec, resource) for rec in records])
    rows = []
    for resource_spans in request.resource_spans:
        resource_attributes = {kv.key: as_string(kv.value) for kv in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                seconds, nanos = divmod(span.start_time_unix_nano, 1_000_000_000)
                rows.append({
                    "Timestamp": f"{seconds}.{nanos:09d}",
                    "TraceId": span.trace_id.hex(),
                    "SpanId": span.span_id.hex(),
                    "ParentSpanId": span.parent_span_id.hex(),
                    "TraceState": span.trace_state,
                    "SpanName": span.name,
                    "SpanKind": SPAN_KINDS[span.kind],
                    "ServiceName": resource_attributes.get("service.name", ""),
                    "ResourceAttributes": resource_attributes,
                    "ScopeName": scope_spans.scope.name,
                    "ScopeVersion": scope_spans.scope.version,
                    "SpanAttributes": {kv.key: as_string(kv.value) for kv in span.attributes},
                    "Duration": span.end_time_unix_nano - span.start_time_unix_nano,
                    "StatusCode": STATUS_CODES[span.status.code],
                    "StatusMessage": span.status.message,
                })
    return rows


@pytest.fixture(scope="module")
def engines(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Any]]:
    path = tmp_path_factory.mktemp("clickhouse") / "audit.sqlite"
    records = random_records(400, seed=23)

    async def fill() -> None:
        async with running(audit_settings(path, batch_size=64)) as log:
            for rec in records:
                await log.record(rec)

    asyncio.run(fill())
    rows = exporter_rows(records)
    rows.extend(rows[:25])  # delivered twice
    db = chdb_session.Session(str(tmp_path_factory.mktemp("chdb")))
    db.query(OTEL_TRACES_DDL)
    payload = "\n".join(json.dumps(row) for row in rows)
    db.query(f"INSERT INTO otel_traces FORMAT JSONEachRow\n{payload}")
    assert json.loads(str(db.query("SELECT count() AS n FROM otel_traces", "JSONEachRow")))["n"] == 425
    try:
        yield path, db
    finally:
        db.close()


def run(db: Any, sql: str) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = json.loads(str(db.query(sql)))
    return result


@settings(max_examples=60, deadline=None)
@given(flt=filters)
def test_listing_matches_sqlite(engines: tuple[Path, Any], flt: AuditFilter) -> None:
    path, db = engines
    with contextlib.closing(connect_reader(str(path))) as conn:
        expected = query_decisions(conn, flt)
    assert run(db, clickhouse_query(flt)) == expected


@settings(max_examples=50, deadline=None)
@given(flt=filters, by=st.sampled_from(["category", "policy", "purpose", "principal", "decision", "status"]),
       per=st.sampled_from([None, "day", "hour"]))
def test_counts_match_sqlite(engines: tuple[Path, Any], flt: AuditFilter, by: str, per: str | None) -> None:
    path, db = engines
    with contextlib.closing(connect_reader(str(path))) as conn:
        expected = count_decisions(conn, flt, by, per)
    assert run(db, clickhouse_count(flt, by, per)) == expected


def test_typical_queries(engines: tuple[Path, Any]) -> None:
    path, db = engines
    deny = AuditFilter(decision="deny", limit=10**6)
    with contextlib.closing(connect_reader(str(path))) as conn:
        denials = count_decisions(conn, deny, "category", "day")
        history = query_decisions(conn, AuditFilter(principal="p-bob"))
    assert denials and history
    assert run(db, clickhouse_count(deny, "category", "day")) == denials
    assert run(db, clickhouse_query(AuditFilter(principal="p-bob"))) == history


def test_values_are_quoted(engines: tuple[Path, Any]) -> None:
    _, db = engines
    hostile = "x' OR 1=1 OR SpanName != '\\"
    assert run(db, clickhouse_query(AuditFilter(principal=hostile, category=hostile))) == []
    assert quote("it's") == "'it\\'s'"


def test_other_formats_are_valid_clickhouse(engines: tuple[Path, Any]) -> None:
    _, db = engines
    csv_text = str(db.query(clickhouse_query(AuditFilter(limit=3), fmt="csv")))
    assert csv_text.splitlines()[0].startswith('"decision_id","time","decision"')
    assert len(csv_text.strip().splitlines()) == 4
    table = str(db.query(clickhouse_count(AuditFilter(), "decision", fmt="table")))
    assert "allow" in table and "deny" in table
