"""Decisions of the real gateway reach a real OTLP receiver (oteltap) on loopback, including those made
while the receiver was down."""

from __future__ import annotations

import asyncio
from pathlib import Path

from gateway.demo.tenants import CONTOSO_TENANT as A
from tests.audit.test_audit_otlp import receiver, until
from tests.support.idp import DevIdP
from tests.support.poll import wait_until_async
from tests.support.servers import ThreadedServer, free_port
from tests.support.stack import running_gateway

SUPPORT = "essential.service.operations.support"


async def test_every_decision_arrives_even_after_a_collector_outage(
    idp: DevIdP, reference_upstream: ThreadedServer, tmp_path: Path
) -> None:
    port = free_port()
    with running_gateway(
        idp, reference_upstream.url, tmp_path / "audit.sqlite",
        GATEWAY_AUDIT_OTLP_ENDPOINT=f"http://127.0.0.1:{port}",
        GATEWAY_AUDIT_EXPORT_INTERVAL_SECONDS="0.05",
        GATEWAY_AUDIT_OTLP_TIMEOUT_SECONDS="1",
        GATEWAY_AUDIT_EXPORT_MAX_BACKOFF_SECONDS="0.3",
    ) as stack:
        token = stack.mint(A, roles=["Support.Agent"])

        def send_batch(n: int) -> list[str]:
            ids = []
            for i in range(n):
                purpose = SUPPORT if i % 3 else "marketing.advertising"  # allows and denials
                reply = stack.http("GET", f"/tenants/{A}/contacts/ct-a-00{1 + i % 9}", token=token, purpose=purpose)
                ids.append(reply.header("X-Decision-Id") or "")
            ids.append(stack.http("GET", "/nowhere", token="garbage").header("X-Decision-Id") or "")
            return ids

        during_outage = await asyncio.to_thread(send_batch, 15)
        exporter = stack.app.audit.exporter
        assert exporter is not None
        # the exporter has tried to send while the receiver was down, failed and backs off
        await wait_until_async(lambda: exporter.failures >= 1, message="an export failed while the receiver was down")
        async with receiver(port) as collected:
            after = await asyncio.to_thread(send_batch, 15)
            expected = set(during_outage + after)

            def arrived() -> set[str]:
                return {
                    attr.value.string_value
                    for span in collected.spans
                    for attr in span.attributes
                    if attr.key == "privacy.decision.id"
                }

            await until(lambda: expected <= arrived(), timeout=30)
            assert all(span.name == "authz.decision" for span in collected.spans)
            counts = collected.span_ids()
            assert len(counts) >= len(expected)
