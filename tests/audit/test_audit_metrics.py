"""Metrics through the OpenTelemetry SDK: decisions by outcome, latency histogram, queue depth, export lag."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from tests.support.poll import wait_until_async
from tests.support.servers import free_port

from .helpers import make_record, running, settings


def points(reader: InMemoryMetricReader) -> dict[str, list[Any]]:
    data = reader.get_metrics_data()
    out: dict[str, list[Any]] = {}
    assert data is not None
    for resource_metrics in data.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                out.setdefault(metric.name, []).extend(metric.data.data_points)
    return out


async def test_decisions_latency_and_queue_metrics(tmp_path: Path) -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    async with running(settings(tmp_path / "a.sqlite", mode="durable"), meter_provider=provider) as log:
        for _ in range(10):
            await log.record(make_record(decision_us=120))
        for _ in range(4):
            await log.record(make_record(decision="deny", status=403, decision_us=30))
        await log.record(make_record(decision="deny", status=401, decision_us=10))
        gauges = points(reader)
    # decision counts are recorded by the writer right after each commit; after close() all are in
    collected = points(reader)
    decisions = {
        (p.attributes["privacy.decision.outcome"], p.attributes["http.response.status_code"]): p.value
        for p in collected["gateway.decisions"]
    }
    assert decisions == {("allow", 200): 10, ("deny", 403): 4, ("deny", 401): 1}
    histogram = {p.attributes["privacy.decision.outcome"]: p for p in collected["gateway.decision.duration"]}
    assert histogram["allow"].count == 10 and histogram["deny"].count == 5
    assert abs(histogram["allow"].sum - 10 * 120e-6) < 1e-9
    assert [p.value for p in gauges["gateway.audit.queue.depth"]] == [0]
    assert [p.value for p in gauges["gateway.audit.healthy"]] == [1]
    assert "gateway.audit.export.lag" not in gauges  # no exporter: nothing to report


async def test_export_lag_is_reported_while_the_collector_is_away(tmp_path: Path) -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    config = settings(tmp_path / "a.sqlite", otlp_endpoint=f"http://127.0.0.1:{free_port()}",
                      otlp_timeout_seconds=0.2, export_interval_seconds=0.05, close_timeout_seconds=0.5)
    async with running(config, meter_provider=provider) as log:
        await log.record(make_record(time=make_record().time - 30))
        exporter = log.exporter
        assert exporter is not None
        await wait_until_async(lambda: exporter.failures, message="a failed export")
        collected = points(reader)
    lag = [p.value for p in collected["gateway.audit.export.lag"]]
    assert len(lag) == 1 and lag[0] >= 30
    assert sum(p.value for p in collected["gateway.audit.export.failures"]) >= 1
