"""OpenTelemetry metrics of the audit trail, recorded off the request path.

Decision counts and the decision-latency histogram are recorded by the writer thread after each
group commit (one ``add`` per distinct outcome in the batch, one histogram ``record`` per record),
so the request path pays nothing for them. Queue depth, export lag and store health are observable
gauges read at collection time. With no ``MeterProvider`` configured the API's no-op (or the global
provider set later) is used.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation

from gateway.audit.record import DecisionRecord

METER_NAME = "gateway.audit"

#: Seconds; decisions take tens of microseconds to a few milliseconds.
DECISION_DURATION_BUCKETS: Sequence[float] = (
    0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
)


class AuditMetrics:
    """The instruments; gauges read their values through the callables given."""

    def __init__(
        self,
        meter_provider: MeterProvider | None,
        *,
        queue_depth: Callable[[], int],
        healthy: Callable[[], bool],
        export_lag: Callable[[], float | None],
    ) -> None:
        provider = meter_provider if meter_provider is not None else metrics.get_meter_provider()
        meter = provider.get_meter(METER_NAME)
        self.decisions = meter.create_counter(
            "gateway.decisions", unit="{decision}", description="Decisions recorded in the audit store, by outcome"
        )
        self.decision_duration = meter.create_histogram(
            "gateway.decision.duration",
            unit="s",
            description="Time spent authenticating and deciding a request",
            explicit_bucket_boundaries_advisory=DECISION_DURATION_BUCKETS,
        )
        self.records_lost = meter.create_counter(
            "gateway.audit.records.lost",
            unit="{record}",
            description="Records never stored: store unwritable with fail_closed=false, or given up at close",
        )
        self.records_refused = meter.create_counter(
            "gateway.audit.records.refused",
            unit="{record}",
            description="Requests refused because the store could not be written (fail_closed=true)",
        )
        self.write_errors = meter.create_counter(
            "gateway.audit.write.errors", unit="{error}", description="Failed group commits"
        )
        self.exported = meter.create_counter(
            "gateway.audit.export.spans", unit="{span}", description="authz.decision spans accepted by the collector"
        )
        self.export_failures = meter.create_counter(
            "gateway.audit.export.failures", unit="{attempt}", description="Failed OTLP export attempts"
        )
        self._queue_depth = queue_depth
        self._healthy = healthy
        self._export_lag = export_lag
        meter.create_observable_gauge(
            "gateway.audit.queue.depth",
            callbacks=[self._observe_queue_depth],
            unit="{record}",
            description="Records accepted and not yet committed",
        )
        meter.create_observable_gauge(
            "gateway.audit.export.lag",
            callbacks=[self._observe_export_lag],
            unit="s",
            description="Age of the oldest committed record not yet accepted by the collector (0 = caught up)",
        )
        meter.create_observable_gauge(
            "gateway.audit.healthy",
            callbacks=[self._observe_healthy],
            unit="1",
            description="1 when the last write to the audit store succeeded",
        )
        self._outcome_attributes: dict[tuple[str, int], dict[str, str | int]] = {}
        self._duration_attributes: dict[str, dict[str, str]] = {}

    def record_batch(self, records: Iterable[DecisionRecord]) -> None:
        """Count a committed batch: one counter add per outcome, one histogram point per record."""
        counts: dict[tuple[str, int], int] = {}
        histogram = self.decision_duration
        for rec in records:
            key = (rec.decision, rec.status)
            counts[key] = counts.get(key, 0) + 1
            attributes = self._duration_attributes.get(rec.decision)
            if attributes is None:
                attributes = self._duration_attributes[rec.decision] = {"privacy.decision.outcome": rec.decision}
            histogram.record(rec.decision_us / 1_000_000, attributes)
        for key, count in counts.items():
            outcome = self._outcome_attributes.get(key)
            if outcome is None:
                outcome = self._outcome_attributes[key] = {
                    "privacy.decision.outcome": key[0],
                    "http.response.status_code": key[1],
                }
            self.decisions.add(count, outcome)

    def _observe_queue_depth(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(self._queue_depth())]

    def _observe_healthy(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(1 if self._healthy() else 0)]

    def _observe_export_lag(self, options: CallbackOptions) -> Iterable[Observation]:
        lag = self._export_lag()
        return [] if lag is None else [Observation(lag)]


def build_meter_provider(otlp_endpoint: str, service_name: str, export_interval_seconds: float = 10.0) -> MeterProvider:
    """An SDK ``MeterProvider`` exporting over OTLP/HTTP to ``{endpoint}/v1/metrics`` (for the lead to install
    with ``opentelemetry.metrics.set_meter_provider``); with an empty endpoint, one without readers."""
    from opentelemetry.sdk.metrics import MeterProvider as SdkMeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource

    resource = Resource.create({"service.name": service_name})
    endpoint = otlp_endpoint.strip().rstrip("/")
    if not endpoint:
        return SdkMeterProvider(resource=resource)
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

    if endpoint.endswith("/v1/traces"):
        endpoint = endpoint[: -len("/v1/traces")]
    if not endpoint.endswith("/v1/metrics"):
        endpoint += "/v1/metrics"
    reader = PeriodicExportingMetricReader(
        OTLPMetricExporter(endpoint=endpoint), export_interval_millis=export_interval_seconds * 1000
    )
    return SdkMeterProvider(resource=resource, metric_readers=[reader])
