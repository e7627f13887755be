"""W3C traceparent: join valid callers, start a new trace otherwise, always send sampled upstream."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.audit.tracecontext import (
    format_traceparent,
    new_span_id,
    new_trace_id,
    parse_traceparent,
    parse_traceparent_strict,
)

TRACE = "0af7651916cd43dd8448eb211c80319c"
SPAN = "b7ad6b7169203331"
HEX32 = re.compile(r"[0-9a-f]{32}")
HEX16 = re.compile(r"[0-9a-f]{16}")


def test_valid_header_joins_the_callers_trace() -> None:
    assert parse_traceparent(f"00-{TRACE}-{SPAN}-01") == (TRACE, SPAN)


def test_unsampled_caller_is_still_joined_and_upstream_is_sampled() -> None:
    trace_id, parent = parse_traceparent(f"00-{TRACE}-{SPAN}-00")
    assert (trace_id, parent) == (TRACE, SPAN)
    ours = new_span_id()
    assert format_traceparent(trace_id, ours) == f"00-{TRACE}-{ours}-01"


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "garbage",
        f"00-{TRACE.upper()}-{SPAN}-01",  # upper case is invalid
        f"00-{'0' * 32}-{SPAN}-01",  # all-zero trace id
        f"00-{TRACE}-{'0' * 16}-01",  # all-zero span id
        f"ff-{TRACE}-{SPAN}-01",  # forbidden version
        f"00-{TRACE}-{SPAN}-01-extra",  # version 00 has exactly four fields
        f"00-{TRACE[:-1]}-{SPAN}-01",
        f"00_{TRACE}_{SPAN}_01",
        f"00-{TRACE}-{SPAN}-1",
    ],
)
def test_invalid_header_starts_a_new_trace(header: str | None) -> None:
    trace_id, parent = parse_traceparent(header)
    assert HEX32.fullmatch(trace_id) and trace_id != "0" * 32
    assert trace_id != TRACE
    assert parent == ""


def test_future_version_with_more_fields_is_accepted() -> None:
    assert parse_traceparent_strict(f"01-{TRACE}-{SPAN}-03-whatever") == (TRACE, SPAN, 3)


def test_new_ids_are_lower_hex_and_vary() -> None:
    spans = {new_span_id() for _ in range(1000)}
    traces = {new_trace_id() for _ in range(1000)}
    assert len(spans) == 1000 and len(traces) == 1000
    assert all(HEX16.fullmatch(s) for s in spans)
    assert all(HEX32.fullmatch(t) for t in traces)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=80))
def test_any_header_gives_a_usable_context(header: str) -> None:
    trace_id, parent = parse_traceparent(header)
    assert HEX32.fullmatch(trace_id) and int(trace_id, 16) != 0
    assert parent == "" or (HEX16.fullmatch(parent) and int(parent, 16) != 0)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 2**128 - 1), st.integers(1, 2**64 - 1), st.integers(0, 255))
def test_every_well_formed_header_round_trips(trace: int, span: int, flags: int) -> None:
    header = f"00-{trace:032x}-{span:016x}-{flags:02x}"
    assert parse_traceparent(header) == (f"{trace:032x}", f"{span:016x}")
