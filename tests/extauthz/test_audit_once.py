"""Every request through Envoy is audited exactly once, whichever path decided it, with no gap.

A mix of requests (decided by the check, delegated to the proxy path, refused at the check, refused
after the answer) goes through Envoy; afterwards each answer's ``X-Decision-Id`` names exactly one
record, there is no other record, and each writer's sequence runs without a gap. Run against one
gateway worker in the test process and against ``gateway serve --mode ext-authz --workers 2`` (a
check in one worker, its delegated request in another, sharing the generated delegation key).
"""

from __future__ import annotations

import json
import os
import sys
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gateway.demo.tenants import CONTOSO_TENANT as A
from load.measure.procs import Service
from tests.extauthz.conftest import DURABLE, behind_envoy, records, require_envoy, running_envoy
from tests.support.idp import DevIdP
from tests.support.servers import ThreadedServer, free_port
from tests.support.stack import Reply, Stack, gateway_env, process_stack

SUPPORT = "essential.service.operations.support"


def mix(client: Stack) -> Iterator[tuple[Reply, str]]:
    """(answer, the mode expected to have decided it)."""
    support = client.mint(A, roles=["Support.Agent"])
    manager = client.mint(A, roles=["Marketing.Manager"])
    for round_ in range(3):
        yield client.http("GET", f"/tenants/{A}/payments", token=support, purpose=SUPPORT), "ext-authz"
        yield client.http("GET", f"/tenants/{A}/payments/pay-a-005", token=support, purpose=SUPPORT), "ext-authz-proxy"
        yield client.http("GET", f"/tenants/{A}/payments/pay-a-001", token=support, purpose=SUPPORT), "ext-authz-proxy"
        yield client.http("GET", f"/tenants/{A}/payments", purpose=SUPPORT), "ext-authz"
        yield client.http("GET", f"/tenants/{A}/payments", token=support), "ext-authz"
        yield client.http("GET", "/nowhere", token=support, purpose=SUPPORT), "ext-authz"
        yield client.http(
            "POST", f"/tenants/{A}/surveys/sv-a-001/invitations", token=manager,
            purpose="marketing.communications.email", headers={"Content-Type": "application/json"},
            body=json.dumps({"email": f"new-{round_}@example.com"}).encode(),
        ), "ext-authz-proxy"


def assert_audited_once(replies: list[tuple[Reply, str]], audit_path: Path) -> None:
    stored = records(audit_path)
    by_id = defaultdict(list)
    for record in stored:
        by_id[record["decision_id"]].append(record)
    ids = [reply.header("X-Decision-Id") or "" for reply, _ in replies]
    assert all(ids) and len(set(ids)) == len(ids)
    assert sorted(by_id) == sorted(ids)  # no record without an answer, no answer without a record
    for reply, mode in replies:
        (record,) = by_id[reply.header("X-Decision-Id")]
        assert json.loads(record["extra"])["mode"] == mode, (reply.status, record)
        assert record["status"] in (reply.status, 200)  # a check's allow records the check's 200
    sequences: dict[str, list[int]] = defaultdict(list)
    for record in stored:
        sequences[record["gateway_id"]].append(record["seq"])
    for numbers in sequences.values():
        assert sorted(numbers) == list(range(min(numbers), min(numbers) + len(numbers)))


def test_one_record_per_request_one_worker(idp: DevIdP, reference_upstream: ThreadedServer, tmp_path: Path) -> None:
    with behind_envoy(idp, reference_upstream.url, tmp_path) as behind:
        replies = list(mix(behind.client))
        assert_audited_once(replies, behind.gateway.audit_path)


def test_one_record_per_request_two_workers(idp: DevIdP, reference_upstream: ThreadedServer, tmp_path: Path) -> None:
    require_envoy()
    audit = tmp_path / "audit.sqlite"
    port = free_port()
    env: dict[str, Any] = {**os.environ, **gateway_env(idp, reference_upstream.url, audit), **DURABLE}
    env = {k: v for k, v in env.items() if k != "GATEWAY_SERVER_DELEGATION_SECRET"}
    gateway = Service(
        "gateway-workers",
        [sys.executable, "-m", "gateway.cli", "serve", "--mode", "ext-authz", "--workers", "2", "--port", str(port)],
        port, tmp_path, ready_url=f"http://127.0.0.1:{port}/readyz", env=env,
    ).start(timeout_s=60)
    try:
        with running_envoy(tmp_path, reference_upstream.url, gateway.url) as envoy:
            client = process_stack(idp, envoy.port, reference_upstream.url, audit)
            replies = [pair for _ in range(4) for pair in mix(client)]
            assert {reply.status for reply, _ in replies} >= {200, 400, 401, 403}
            assert_audited_once(replies, audit)
    finally:
        gateway.stop()
