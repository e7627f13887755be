"""`gateway serve` as a real process: readiness, graceful shutdown with a request in flight, workers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.demo.tenants import CONTOSO_TENANT as A
from tests.hostile.support import parse_replies, stored_decision_ids
from tests.support.idp import DevIdP
from tests.support.poll import wait_until
from tests.support.processes import close_pipes
from tests.support.servers import ThreadedServer, free_port, wait_for_port
from tests.support.stack import Reply, Stack, gateway_env, process_stack, raw_exchange

SUPPORT = "essential.service.operations.support"


def start_gateway(env: dict[str, str], *args: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    full_env.update(env)
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve", "--port", str(port), *args],
        env=full_env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    return process, port


@pytest.fixture
def served(idp: DevIdP, echo_server: ThreadedServer, reference_upstream: ThreadedServer,
           tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Stack]]:
    env = gateway_env(idp, echo_server.url, tmp_path / "audit.sqlite")
    env["GATEWAY_POLICIES_RESOLVER_URL"] = reference_upstream.url
    process, port = start_gateway(env)
    stack = process_stack(idp, port, echo_server.url, tmp_path)
    try:
        wait_for_port(port, timeout=30)
        stack.wait_ready(timeout=30)
        yield process, stack
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(10)
        close_pipes(process)


def test_graceful_shutdown_lets_in_flight_request_finish(served: tuple[subprocess.Popen[bytes], Stack]) -> None:
    process, stack = served
    token = stack.mint(A, roles=["Support.Agent"])
    replies: list[Reply] = []

    def slow_call() -> None:
        replies.append(stack.http("GET", f"/tenants/{A}/contacts/slow-1?delay=1.5", token=token, purpose=SUPPORT))

    thread = threading.Thread(target=slow_call)
    thread.start()
    time.sleep(0.5)  # the request is now waiting on the upstream
    process.send_signal(signal.SIGTERM)
    thread.join(30)
    assert replies and replies[0].status == 200, replies
    assert replies[0].json()["slow"] is True
    assert process.wait(30) in (0, -signal.SIGTERM)  # uvicorn re-raises SIGTERM after a clean shutdown
    output = process.stdout.read().decode() if process.stdout else ""
    assert "Traceback" not in output


def test_readyz_and_healthz(served: tuple[subprocess.Popen[bytes], Stack]) -> None:
    _, stack = served
    health = stack.http("GET", "/healthz")
    assert health.status == 200
    ready = stack.http("GET", "/readyz")
    assert ready.status == 200
    assert ready.json()["checks"] == {"keys": True, "policies": True, "audit": True}


def test_two_workers_serve(idp: DevIdP, echo_server: ThreadedServer, reference_upstream: ThreadedServer,
                           tmp_path: Path) -> None:
    env = gateway_env(idp, echo_server.url, tmp_path / "audit.sqlite")
    env["GATEWAY_POLICIES_RESOLVER_URL"] = reference_upstream.url
    process, port = start_gateway(env, "--workers", "2")
    try:
        stack = process_stack(idp, port, echo_server.url, tmp_path)
        wait_for_port(port, timeout=30)
        stack.wait_ready(timeout=30)
        token = stack.mint(A, roles=["Support.Agent"])
        ids = set()
        for i in range(20):
            reply = stack.http("GET", f"/tenants/{A}/contacts/echo-{i}", token=token, purpose=SUPPORT)
            assert reply.status == 200
            ids.add(reply.header("X-Decision-Id"))
        assert len(ids) == 20
        # What a worker's HTTP layer refuses itself reaches the gateway that worker built (its wiring
        # is pickled into the worker: gateway/serve.py refusal_in_worker), and is audited.
        refused = set()
        for _ in range(6):
            [answer] = parse_replies(raw_exchange(port, b"GARBAGE\r\n\r\n"))
            assert answer.status == 400 and answer.json()["reason"] == "not_http"
            refused.add(answer.header("X-Decision-Id"))
        audit = tmp_path / "audit.sqlite"
        wait_until(
            lambda: refused <= stored_decision_ids(audit), timeout=20,
            message="every refused request in the audit store",
        )
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            assert process.wait(30) in (0, -signal.SIGTERM)  # uvicorn re-raises SIGTERM after a clean shutdown
        finally:
            close_pipes(process)
