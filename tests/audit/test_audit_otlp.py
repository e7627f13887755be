"""OTLP export to a real receiver on loopback (oteltap): every decision arrives, once, even after an outage."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from oteltap import OtelTapHttpProtobufReceiver, OtelTapHttpProtobufReceiverSettings

from gateway.audit import commands
from gateway.audit.log import AuditLog
from gateway.audit.tracecontext import parse_traceparent
from tests.support.poll import wait_until_async
from tests.support.servers import free_port

from .helpers import make_record, reader, running, settings


def cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="gateway")
    commands.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    status: int = args.func(args)
    return status


class Collected:
    def __init__(self) -> None:
        self.spans: list[Span] = []

    def span_ids(self) -> Counter[str]:
        """The decision spans (checkpoints signed at close travel as ``audit.checkpoint`` spans too)."""
        return Counter(span.span_id.hex() for span in self.spans if span.name == "authz.decision")


@contextlib.asynccontextmanager
async def receiver(port: int) -> AsyncIterator[Collected]:
    collected = Collected()
    async with OtelTapHttpProtobufReceiver(OtelTapHttpProtobufReceiverSettings(http_port=port)) as tap:
        started = asyncio.Event()

        async def collect() -> None:
            stream = tap.stream_traces()
            started.set()
            async for span in stream:
                collected.spans.append(span)

        task = asyncio.create_task(collect())
        await asyncio.sleep(0)
        await started.wait()
        try:
            yield collected
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def until(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    await wait_until_async(condition, timeout=timeout, message="the export's state")


def export_settings(path: Path, port: int, **overrides: Any) -> Any:
    return settings(
        path, otlp_endpoint=f"http://127.0.0.1:{port}", otlp_timeout_seconds=1.0,
        export_interval_seconds=0.05, export_max_backoff_seconds=0.3, export_batch_size=64, **overrides,
    )


def attributes(span: Span) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kv in span.attributes:
        kind = kv.value.WhichOneof("value")
        if kind == "array_value":
            out[kv.key] = [v.string_value for v in kv.value.array_value.values]
        else:
            out[kv.key] = getattr(kv.value, kind)
    return out


def caught_up(log: AuditLog, store: Path) -> bool:
    assert log.exporter is not None
    with contextlib.closing(reader(store)) as conn:
        last = conn.execute("SELECT coalesce(max(id), 0) FROM decisions").fetchone()[0]
    return log.exporter.cursor == last and log.queue_depth == 0


async def test_every_decision_arrives_as_a_span(tmp_path: Path) -> None:
    store = tmp_path / "audit.sqlite"
    port = free_port()
    caller_trace, caller_span = parse_traceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00")
    async with receiver(port) as collected, running(export_settings(store, port)) as log:
        joined = make_record(trace_id=caller_trace, parent_span_id=caller_span, upstream_ms=3.25,
                             duration_us=4200, masked_fields=("/card_number",), recipient="salesforce")
        records = [joined, *(make_record() for _ in range(199))]
        for rec in records:
            await log.record(rec)
        await until(lambda: len(collected.spans) >= 200)
        await until(lambda: caught_up(log, store))
        assert log.exporter is not None and log.exporter.lag_seconds == 0
    assert collected.span_ids() == Counter({rec.span_id: 1 for rec in records})

    span = next(s for s in collected.spans if s.span_id.hex() == joined.span_id)
    # an unsampled caller (flags 00) is joined and still exported
    assert span.trace_id.hex() == caller_trace and span.parent_span_id.hex() == caller_span
    assert span.name == "authz.decision" and span.kind == Span.SPAN_KIND_SERVER
    start = round(joined.time * 1e6) * 1000
    assert (span.start_time_unix_nano, span.end_time_unix_nano) == (start, start + 4200 * 1000)
    attrs = attributes(span)
    assert attrs["enduser.id"] == joined.principal_id
    assert attrs["user.roles"] == ["Support.Agent"]
    assert attrs["http.request.method"] == "GET"
    assert attrs["url.path"] == joined.path
    assert attrs["http.route"] == "/tenants/{tid}/contacts/{id}"
    assert attrs["http.response.status_code"] == 200
    assert attrs["privacy.decision.id"] == joined.decision_id
    assert attrs["privacy.decision.outcome"] == "allow"
    assert attrs["privacy.purpose"] == "essential.service.operations.support"
    assert attrs["privacy.data_categories"] == ["user.contact.email", "user.name"]
    assert attrs["privacy.policy.ids"] == ["support-read-contacts"]
    assert attrs["privacy.masked_fields"] == ["/card_number"]
    assert attrs["privacy.recipient"] == "salesforce"
    assert attrs["gateway.sequence"] == 1 and attrs["gateway.id"] == "gw-test"
    assert attrs["gateway.upstream.duration_ms"] == 3.25
    assert "error.type" not in attrs


async def test_receiver_down_delays_but_loses_nothing(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.CRITICAL, logger="opentelemetry")
    store = tmp_path / "audit.sqlite"
    port = free_port()
    async with running(export_settings(store, port, mode="durable")) as log:
        assert log.exporter is not None
        exporter = log.exporter
        first = [make_record() for _ in range(150)]
        for rec in first:
            await log.record(rec)
        await until(lambda: exporter.failures >= 2)  # tried, and tried again: nothing listens
        assert exporter.cursor == 0 and (exporter.lag_seconds or 0) > 0
        async with receiver(port) as collected:
            later = [make_record(status=502, reason="upstream_error") for _ in range(50)]
            for rec in later:
                await log.record(rec)
            await until(lambda: len(collected.spans) >= 200)
            await until(lambda: caught_up(log, store))
            await asyncio.sleep(0.3)  # room for a duplicate to show up, if one were sent
    assert collected.span_ids() == Counter({rec.span_id: 1 for rec in [*first, *later]})
    error = next(s for s in collected.spans if s.span_id.hex() == later[0].span_id)
    assert error.status.code == error.status.STATUS_CODE_ERROR
    assert attributes(error)["error.type"] == "upstream_error"


async def test_export_resumes_after_a_restart_from_the_stored_cursor(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.CRITICAL, logger="opentelemetry")
    store = tmp_path / "audit.sqlite"
    port = free_port()
    async with receiver(port) as collected, running(export_settings(store, port)) as log:
        exported = [make_record() for _ in range(30)]
        for rec in exported:
            await log.record(rec)
        await until(lambda: caught_up(log, store))
    # the collector is gone while the gateway records, then the gateway stops
    async with running(export_settings(store, port, close_timeout_seconds=1.0)) as log:
        pending = [make_record() for _ in range(40)]
        for rec in pending:
            await log.record(rec)
    async with receiver(port) as later_collected, running(export_settings(store, port)) as log:
        await until(lambda: len(later_collected.spans) >= 40)
        await until(lambda: caught_up(log, store))
    assert collected.span_ids() == Counter({rec.span_id: 1 for rec in exported})
    assert later_collected.span_ids() == Counter({rec.span_id: 1 for rec in pending})


async def test_two_gateways_sharing_a_store_export_each_record_once(tmp_path: Path) -> None:
    store = tmp_path / "audit.sqlite"
    port = free_port()
    async with (
        receiver(port) as collected,
        running(export_settings(store, port, gateway_id="gw-a")) as first,
        running(export_settings(store, port, gateway_id="gw-b")) as second,
    ):
        records = [make_record() for _ in range(120)]
        for index, rec in enumerate(records):
            await (first if index % 2 else second).record(rec)
        await until(lambda: len(collected.spans) >= 120)
        await until(lambda: caught_up(first, store) or caught_up(second, store))
        await asyncio.sleep(0.3)
        assert [first.exporter.lease_held, second.exporter.lease_held].count(True) == 1  # type: ignore[union-attr]
    assert collected.span_ids() == Counter({rec.span_id: 1 for rec in records})
    by_gateway = Counter(attributes(s)["gateway.id"] for s in collected.spans)
    assert by_gateway == {"gw-a": 60, "gw-b": 60}


async def test_export_command_sends_what_the_store_holds(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.CRITICAL, logger="opentelemetry")
    store = tmp_path / "audit.sqlite"
    port = free_port()
    async with running(settings(store)) as log:  # a gateway without in-process export
        records = [make_record() for _ in range(70)]
        for rec in records:
            await log.record(rec)
    command = ["audit", "export", "--path", str(store), "--endpoint", f"http://127.0.0.1:{port}", "--once"]
    assert await asyncio.to_thread(cli, *command, "--timeout", "2") == 1  # nobody listens yet
    async with receiver(port) as collected:
        assert await asyncio.to_thread(cli, *command) == 0
        await until(lambda: len(collected.spans) >= 70)
        assert await asyncio.to_thread(cli, *command) == 0  # nothing left: sends nothing twice
        await asyncio.sleep(0.3)
    assert collected.span_ids() == Counter({rec.span_id: 1 for rec in records})
