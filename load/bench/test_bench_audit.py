"""Costs of the audit trail: the request-path share (``record()``, ids, trace context, metrics), the
writer's and exporter's per-record work, and typical audit queries on a one-million-record store.

    .venv/bin/pytest load/bench/test_bench_audit.py --benchmark-enable -p no:cacheprovider

Batch benchmarks time BATCH calls per round: divide the figures by BATCH (printed in extra_info).
"""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans  # noqa: E402
from opentelemetry.sdk.metrics import MeterProvider  # noqa: E402
from opentelemetry.sdk.metrics.export import InMemoryMetricReader  # noqa: E402

from gateway.audit.ids import uuid7  # noqa: E402
from gateway.audit.log import AuditLog  # noqa: E402
from gateway.audit.maintenance import verify  # noqa: E402
from gateway.audit.metrics import AuditMetrics  # noqa: E402
from gateway.audit.query import AuditFilter, count_decisions, query_decisions  # noqa: E402
from gateway.audit.record import DecisionRecord  # noqa: E402
from gateway.audit.schema import connect_reader, record_row  # noqa: E402
from gateway.audit.settings import AuditSettings  # noqa: E402
from gateway.audit.spans import build_span, span_resource  # noqa: E402
from gateway.audit.synthetic import SyntheticStore, generate_store  # noqa: E402
from gateway.audit.tracecontext import format_traceparent, new_span_id, new_trace_id, parse_traceparent  # noqa: E402

BATCH = 1000
ROUNDS = 40
DAY_US = 86_400_000_000


def record(**fields: Any) -> DecisionRecord:
    values: dict[str, Any] = {
        "decision_id": uuid7(), "time": time.time(), "method": "GET", "path": "/tenants/t/contacts/c-1",
        "trace_id": "0af7651916cd43dd8448eb211c80319c", "span_id": new_span_id(),
        "route": "/tenants/{tid}/contacts/{id}", "tenant": "t", "principal_kind": "user", "principal_id": "p",
        "roles": ("Support.Agent",), "action": "read", "resource_type": "Contact", "resource_id": "c-1",
        "categories": ("user.contact.email", "user.name"), "purpose": "essential.service.operations.support",
        "decision": "allow", "reason": "allowed", "policies": ("support-read",), "status": 200, "decision_us": 80,
    }
    values.update(fields)
    return DecisionRecord(**values)


def complete(coroutine: Coroutine[Any, Any, None]) -> None:
    """Run a coroutine that must not suspend (the queue has room): no event-loop cost in the figure."""
    try:
        coroutine.send(None)
    except StopIteration:
        return
    coroutine.close()
    raise AssertionError("record() suspended: the queue was full")


# -- the request path -----------------------------------------------------------------------------


def test_record_async_enqueue(benchmark: Any, tmp_path: Path) -> None:
    """``await AuditLog.record(rec)`` in async mode, the writer thread running: BATCH calls a round."""
    loop = asyncio.new_event_loop()
    log = AuditLog(AuditSettings(path=str(tmp_path / "a.sqlite"), queue_size=BATCH * (ROUNDS + 5), gateway_id="b"))
    loop.run_until_complete(log.start())
    pool = iter([[record() for _ in range(BATCH)] for _ in range(ROUNDS + 2)])

    def enqueue(batch: list[DecisionRecord]) -> None:
        for rec in batch:
            complete(log.record(rec))

    benchmark.extra_info["per"] = f"{BATCH} records"
    benchmark.pedantic(enqueue, setup=lambda: ((next(pool),), {}), rounds=ROUNDS, iterations=1, warmup_rounds=1)
    loop.run_until_complete(log.close())
    loop.close()
    assert log.stats.committed == BATCH * (ROUNDS + 1) and log.stats.lost == 0


@pytest.mark.parametrize("concurrency", [1, 64])
def test_record_durable(benchmark: Any, tmp_path: Path, concurrency: int) -> None:
    """Durable mode (synchronous=FULL, group commit): ``concurrency`` requests at once, 256 records a round."""
    loop = asyncio.new_event_loop()
    log = AuditLog(AuditSettings(path=str(tmp_path / "d.sqlite"), mode="durable", gateway_id="d"))
    loop.run_until_complete(log.start())
    per_round = 256

    async def worker(count: int) -> None:
        for _ in range(count):
            await log.record(record())

    async def together() -> None:
        await asyncio.gather(*(worker(per_round // concurrency) for _ in range(concurrency)))

    def run() -> None:
        loop.run_until_complete(together())

    benchmark.extra_info["per"] = f"{per_round} records"
    benchmark.pedantic(run, rounds=5, iterations=1, warmup_rounds=1)
    loop.run_until_complete(log.close())
    loop.close()
    benchmark.extra_info["records_per_commit"] = round(log.stats.committed / max(log.stats.batches, 1), 1)


def test_uuid7(benchmark: Any) -> None:
    benchmark(uuid7)


def test_traceparent_parse_and_format(benchmark: Any) -> None:
    header = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"

    def run() -> str:
        trace_id, _ = parse_traceparent(header)
        return format_traceparent(trace_id, new_span_id())

    benchmark(run)


@pytest.fixture
def sdk_meter_provider() -> Iterator[MeterProvider]:
    provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    yield provider
    provider.shutdown()


def test_metric_counter_add(benchmark: Any, sdk_meter_provider: MeterProvider) -> None:
    """One ``Counter.add`` with a cached attribute dict (what a per-request count would cost)."""
    counter = sdk_meter_provider.get_meter("bench").create_counter("c")
    attributes = {"privacy.decision.outcome": "allow", "http.response.status_code": 200}
    benchmark(counter.add, 1, attributes)


def test_metric_histogram_record(benchmark: Any, sdk_meter_provider: MeterProvider) -> None:
    histogram = sdk_meter_provider.get_meter("bench").create_histogram("h", unit="s")
    attributes = {"privacy.decision.outcome": "allow"}
    benchmark(histogram.record, 0.00008, attributes)


# -- the writer and exporter threads --------------------------------------------------------------


def test_writer_row_building(benchmark: Any) -> None:
    """Per record in the writer thread: row tuple and term keys as the writer builds them
    (``rows.RowEncoder``, its memos warm), BATCH records a round."""
    from gateway.audit.rows import RowEncoder

    batch = [record() for _ in range(BATCH)]
    encoder = RowEncoder()

    def run() -> None:
        for rec in batch:
            encoder.row(rec)
            encoder.terms(rec)

    benchmark.extra_info["per"] = f"{BATCH} records"
    benchmark(run)


def test_chain_link(benchmark: Any, tmp_path: Path) -> None:
    """Per record in the writer thread: the hash chain (canonical form + SHA-256 link), BATCH a round."""
    from gateway.audit.chain import GENESIS_BYTES, Canonical, link, table_columns
    from gateway.audit.schema import DECISION_COLUMNS, connect_writer

    conn = connect_writer(str(tmp_path / "a.sqlite"), durable=False, busy_timeout=1.0)
    canonical = Canonical(DECISION_COLUMNS[1:], table_columns(conn))
    conn.close()
    rows = [record_row(record(sequence=i, gateway_id="b", upstream_ms=1.25)) for i in range(BATCH)]

    def run() -> None:
        head = GENESIS_BYTES
        for row in rows:
            head = link(head, canonical.form(row, coerce=True)[0])

    benchmark.extra_info["per"] = f"{BATCH} records"
    benchmark(run)


def test_assertion_sign(benchmark: Any, tmp_path: Path) -> None:
    """Per forwarded request: signing its X-Gateway-Assertion (EdDSA, pyjwt), BATCH a round."""
    from gateway.assertion import AssertionSigner

    signer = AssertionSigner(tmp_path / "keys.json", audience="http://127.0.0.1:8081")

    def run() -> None:
        for _ in range(BATCH):
            signer.sign_request(tenant="t", principal="0c9f0a54-2f0e-4e0b-a5d6-3f1c2b7e9a10", principal_kind="user",
                                roles=("Support.Agent",), purpose="essential.service.operations.support",
                                decision_id="019a0000-0000-7000-8000-000000000000",
                                route="/tenants/{tid}/payments/{id}", method="GET", path="/tenants/t/payments/p-1",
                                masks=("/card_number",))

    benchmark.extra_info["per"] = f"{BATCH} requests"
    benchmark(run)


def test_writer_metrics_per_batch(benchmark: Any, sdk_meter_provider: MeterProvider) -> None:
    """The writer's metric work for one committed batch of BATCH records."""
    metrics = AuditMetrics(sdk_meter_provider, queue_depth=lambda: 0, healthy=lambda: True, export_lag=lambda: 0.0)
    batch = [record(decision="deny" if i % 4 == 0 else "allow") for i in range(BATCH)]
    benchmark.extra_info["per"] = f"{BATCH} records"
    benchmark(metrics.record_batch, batch)


def test_export_span_build_and_encode(benchmark: Any) -> None:
    """Per exported record: span construction and OTLP protobuf encoding (BATCH spans a round)."""
    resource = span_resource("privacy-gateway", "b")
    batch = [record() for _ in range(BATCH)]

    def run() -> bytes:
        data: bytes = encode_spans([build_span(rec, resource) for rec in batch]).SerializeToString()
        return data

    benchmark.extra_info["per"] = f"{BATCH} spans"
    benchmark(run)


# -- queries on one million records ---------------------------------------------------------------


@pytest.fixture(scope="module")
def million(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SyntheticStore, sqlite3.Connection]]:
    path = tmp_path_factory.mktemp("million") / "audit.sqlite"
    store = generate_store(str(path), 1_000_000, seed=5)
    conn = connect_reader(str(path))
    yield store, conn
    conn.close()
    for suffix in ("", "-wal", "-shm"):
        path.with_name(path.name + suffix).unlink(missing_ok=True)


def _bench_query(benchmark: Any, run: Any) -> None:
    result = benchmark.pedantic(run, rounds=10, iterations=1, warmup_rounds=1)
    benchmark.extra_info["rows"] = len(result) if hasattr(result, "__len__") else result


def test_query_principal_history(benchmark: Any, million: tuple[SyntheticStore, sqlite3.Connection]) -> None:
    store, conn = million
    _bench_query(benchmark, lambda: query_decisions(conn, AuditFilter(principal=store.principals[17])))


def test_query_denials_per_category_per_day_30d(
    benchmark: Any, million: tuple[SyntheticStore, sqlite3.Connection]
) -> None:
    _, conn = million
    _bench_query(benchmark, lambda: count_decisions(conn, AuditFilter(decision="deny"), "category", "day"))


def test_query_denials_per_category_per_day_7d(
    benchmark: Any, million: tuple[SyntheticStore, sqlite3.Connection]
) -> None:
    store, conn = million
    flt = AuditFilter(decision="deny", since_us=store.last_time_us - 7 * DAY_US)
    _bench_query(benchmark, lambda: count_decisions(conn, flt, "category", "day"))


def test_query_category_subtree_denials(benchmark: Any, million: tuple[SyntheticStore, sqlite3.Connection]) -> None:
    _, conn = million
    _bench_query(benchmark, lambda: query_decisions(conn, AuditFilter(category="user.contact", decision="deny")))


def test_query_policy_and_purpose(benchmark: Any, million: tuple[SyntheticStore, sqlite3.Connection]) -> None:
    _, conn = million
    flt = AuditFilter(policy="policy-legal-read", purpose="essential.service")
    _bench_query(benchmark, lambda: query_decisions(conn, flt))


def test_query_latest(benchmark: Any, million: tuple[SyntheticStore, sqlite3.Connection]) -> None:
    _, conn = million
    _bench_query(benchmark, lambda: query_decisions(conn, AuditFilter()))


def test_verify_million(benchmark: Any, million: tuple[SyntheticStore, sqlite3.Connection]) -> None:
    _, conn = million
    result = benchmark.pedantic(lambda: verify(conn), rounds=3, iterations=1)
    assert result.ok


# -- the writer thread end to end: realistic records through the real writer into real SQLite --------

WRITER_RECORDS = 20_000
#: The load test's rate on this kind of machine (issue 11): ~2,300 requests/s on one core.
PACED_RATE = 2300
PACED_RECORDS = 4600
CONTACT_ID = "ct-a-005"


@pytest.fixture(scope="module")
def contact_read() -> tuple[Any, Any]:
    return contact_read_decision()


def contact_read_decision() -> tuple[Any, Any]:
    """One Support.Agent reading one contact, decided by the shipped policies, and a function that
    reviews the answer as the gateway does (the decision object is reused from request to request, as
    the decision cache does; the review is made again for each request)."""
    import json as _json

    from gateway.authz.decide import make_decision
    from gateway.authz.engine import PolicyEngine
    from gateway.authz.review import review
    from gateway.demo.fixtures import load_fixtures
    from tests.authz.support import ROUTE_MAPS, SHIPPED_POLICIES, A, facts, user

    engine = PolicyEngine.load(SHIPPED_POLICIES, ROUTE_MAPS)
    request = facts(engine, user("Support.Agent"), "contacts.read", CONTACT_ID,
                    purpose="essential.service.operations.support")
    decision = make_decision(engine, request, *engine.decide(request), None, (f"contact:{CONTACT_ID}",))
    (contact,) = [c for c in load_fixtures()[A].contacts if c["id"] == CONTACT_ID]
    answer = _json.dumps(contact).encode()

    def reviewed() -> Any:
        return review(decision, 200, "application/json", answer, time.time())

    assert decision.allowed and reviewed().refusal is None
    return decision, reviewed


def gateway_record(decision: Any, reviewed: Any, principal: Any) -> DecisionRecord:
    """A record filled field by field as ``gateway/app.py`` fills it for an allowed, reviewed read."""
    outcome = reviewed()
    rec = DecisionRecord(decision_id=uuid7(), time=time.time(), method="GET",
                         path=f"/tenants/{principal.tenant}/contacts/{CONTACT_ID}")
    rec.trace_id, rec.parent_span_id, rec.span_id = new_trace_id(), "", new_span_id()
    rec.tenant, rec.principal_kind, rec.principal_id = principal.tenant, principal.kind, principal.id
    rec.client_id, rec.roles = principal.client_id, principal.roles
    rec.route = decision.route
    rec.decision = "allow" if decision.allowed else "deny"
    rec.reason, rec.action, rec.resource_type = decision.reason, decision.action, decision.resource_type
    rec.resource_id, rec.resource_tenant = decision.resource_id, decision.resource_tenant
    rec.categories, rec.purpose, rec.recipient = decision.categories, decision.purpose, decision.recipient
    rec.consent_ref, rec.policies, rec.clauses = decision.consent_ref, decision.policy_ids, decision.clauses
    rec.policy_hash = decision.policy_hash
    rec.decision_us = 310
    rec.replay = (decision, outcome)
    rec.masked_fields = outcome.pointers
    if outcome.policies:
        rec.policies = (*rec.policies, *outcome.policies)
    rec.status, rec.reason = 200, rec.reason or "allowed"
    rec.upstream_ms, rec.duration_us = 0.412, 905
    return rec


def writer_log(path: Path, **settings: Any) -> AuditLog:
    from gateway.audit.pseudonyms import pseudonymiser
    from gateway.authz.prepare import RecordPreparer

    return AuditLog(AuditSettings(path=str(path), gateway_id="w", **settings),
                    prepare=RecordPreparer(pseudonymiser(b"benchmark pseudonym key, 32 byte")))


def thread_cpu(thread: Any) -> float:
    return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))


async def push(log: AuditLog, records: list[DecisionRecord], rate: float | None) -> None:
    """Hand the records to ``record()``: all at once (``rate`` None) or paced at ``rate`` per second
    in 5 ms ticks, as requests arrive under load; then wait for the writer to commit them all."""
    target = log.stats.committed + len(records)
    if rate is None:
        for rec in records:
            await log.record(rec)
    else:
        loop = asyncio.get_running_loop()
        per_tick, start = max(1, round(rate * 0.005)), loop.time()
        for index in range(0, len(records), per_tick):
            for rec in records[index:index + per_tick]:
                await log.record(rec)
            await asyncio.sleep(max(0.0, start + (index + per_tick) / rate - loop.time()))
    while log.stats.committed < target:
        await asyncio.sleep(0.002)


@pytest.mark.parametrize("arrival", ["burst", "paced"])
def test_writer_cpu_per_record(
    benchmark: Any, tmp_path: Path, contact_read: tuple[Any, Any], arrival: str
) -> None:
    """CPU of the writer thread per record (``extra_info``: writer_cpu_us_per_record, records per
    commit, commits/s): realistic records (the load test's Support.Agent contact read, with its replay
    inputs and data subjects prepared by ``RecordPreparer``) through the real writer into a real SQLite
    file, async mode. ``burst``: the queue is filled at once (batches are full); ``paced``: 2,300
    records/s in 5 ms ticks, the arrival of the load test (batches form by the writer's linger)."""
    from tests.authz.support import user

    decision, reviewed = contact_read
    principal = user("Support.Agent")
    count, rate = (WRITER_RECORDS, None) if arrival == "burst" else (PACED_RECORDS, float(PACED_RATE))
    loop = asyncio.new_event_loop()
    log = writer_log(tmp_path / "w.sqlite", queue_size=count + 1)
    loop.run_until_complete(log.start())
    assert log._thread is not None
    writer = log._thread
    rounds = 3
    pool = iter([[gateway_record(decision, reviewed, principal) for _ in range(count)] for _ in range(rounds + 1)])
    cpu: list[float] = []
    batches: list[int] = []
    wall: list[float] = []

    def run(records: list[DecisionRecord]) -> None:
        before, batches_before, started = thread_cpu(writer), log.stats.batches, time.perf_counter()
        loop.run_until_complete(push(log, records, rate))
        cpu.append(thread_cpu(writer) - before)
        wall.append(time.perf_counter() - started)
        batches.append(log.stats.batches - batches_before)

    benchmark.extra_info["per"] = f"{count} records"
    benchmark.pedantic(run, setup=lambda: ((next(pool),), {}), rounds=rounds, iterations=1, warmup_rounds=1)
    loop.run_until_complete(log.close())
    loop.close()
    assert log.stats.lost == 0 and log.stats.rejected == 0
    # the warm-up round is left out; the best round is the figure (the others share the CPU with noise)
    best = min(range(1, len(cpu)), key=lambda i: cpu[i])
    figures = {
        "writer_cpu_us_per_record": round(cpu[best] / count * 1e6, 1),
        "records_per_commit": round(count / batches[best], 1),
        "commits_per_s": round(batches[best] / wall[best], 1),
        "writer_cpu_us_per_commit": round(cpu[best] / batches[best] * 1e6, 1),
    }
    benchmark.extra_info.update(figures)
    print(f"\nwriter ({arrival}): " + ", ".join(f"{k} {v}" for k, v in figures.items()))
