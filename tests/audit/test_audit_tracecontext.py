"""W3C traceparent: join valid callers, start a new trace otherwise, always send sampled upstream.

The module's parsing and formatting are proven equal to OpenTelemetry's propagator at the end."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    TraceFlags,
    format_span_id,
    format_trace_id,
    get_current_span,
    set_span_in_context,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

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


# The module parses and formats on strings for speed; OpenTelemetry's propagator is the reference.
_PROPAGATOR = TraceContextTextMapPropagator()
_HEX = "0123456789abcdefABCDEF"


def _propagator_parse(header: str) -> tuple[str, str, int] | None:
    parent = get_current_span(_PROPAGATOR.extract({"traceparent": header})).get_span_context()
    if not parent.is_valid:
        return None
    return format_trace_id(parent.trace_id), format_span_id(parent.span_id), int(parent.trace_flags)


def _field(size: int) -> st.SearchStrategy[str]:
    """A field of about the right length, mostly valid, sometimes zero, upper case or a digit short."""
    return st.one_of(
        st.text("0123456789abcdef", min_size=size, max_size=size),
        st.just("0" * size),
        st.text(_HEX, min_size=size - 1, max_size=size + 1),
    )


_near_valid = st.builds(
    lambda lead, version, trace, span, flags, rest, trail, sep: (
        lead + sep.join((version, trace, span, flags)) + rest + trail
    ),
    st.sampled_from(["", " ", "\t", " \t", "\n", "\r", "\x0c"]),
    st.one_of(st.sampled_from(["00", "01", "fe", "ff", "FF", "0"]), _field(2)),
    _field(32),
    _field(16),
    _field(2),
    st.one_of(st.just(""), st.just("-"), st.text(max_size=12).map(lambda s: "-" + s)),
    st.sampled_from(["", " ", "\t", "\n", "\r", "\n\n", " x"]),
    st.sampled_from(["-", "-", "-", "_"]),
)


@settings(max_examples=1000, deadline=None)
@given(
    st.one_of(
        _near_valid,
        st.from_regex(TraceContextTextMapPropagator._TRACEPARENT_HEADER_FORMAT_RE),
        st.text(max_size=80),
        st.text("0123456789abcdef-", min_size=500, max_size=530),
    )
)
def test_parsing_equals_the_propagator(header: str) -> None:
    assert parse_traceparent_strict(header) == _propagator_parse(header)


def test_over_long_header_is_refused_like_the_propagator() -> None:
    header = f"01-{TRACE}-{SPAN}-01-" + "x" * 512
    assert _propagator_parse(header) is None
    assert parse_traceparent_strict(header) is None
    assert parse_traceparent_strict(header[:512]) == (TRACE, SPAN, 1) == _propagator_parse(header[:512])


@settings(max_examples=500, deadline=None)
@given(st.integers(1, 2**128 - 1), st.integers(1, 2**64 - 1))
def test_formatting_equals_the_propagator(trace: int, span: int) -> None:
    ours = SpanContext(trace, span, is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED))
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, set_span_in_context(NonRecordingSpan(ours)))
    assert format_traceparent(format_trace_id(trace), format_span_id(span)) == carrier["traceparent"]
