"""A worker of ``gateway serve --workers 2`` killed with SIGKILL under load.

What must hold: clients see at most connection errors for the requests the dead worker had in hand
(never a wrong status), the server keeps answering, uvicorn's supervisor starts a replacement, and in
``durable`` audit mode every decision a client was told about is in the store (a record is committed
before its response is sent, so a kill cannot take an acknowledged one with it).
"""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from gateway.demo.tenants import CONTOSO_TENANT as A
from tests.hostile.support import SUPPORT, Counting, Ledger
from tests.support.idp import DevIdP
from tests.support.poll import wait_until
from tests.support.servers import ThreadedServer, free_port, wait_for_port
from tests.support.stack import Stack, gateway_env

PROJECT_ROOT = Path(__file__).resolve().parents[2]  # the checkout

PATH = f"/tenants/{A}/contacts/echo-1"


class _Port:
    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"


def workers_of(process: subprocess.Popen[bytes]) -> list[psutil.Process]:
    """The uvicorn worker processes (spawned children running the app), not the resource tracker."""
    out = []
    for child in psutil.Process(process.pid).children(recursive=False):
        try:
            cmdline = " ".join(child.cmdline())
        except psutil.Error:
            continue
        if "multiprocessing" in cmdline and "resource_tracker" not in cmdline:
            out.append(child)
    return out


@pytest.fixture
def served(idp: DevIdP, echo: tuple[ThreadedServer, Counting], reference: tuple[ThreadedServer, Counting],
           tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Stack]]:  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.update(gateway_env(idp, echo[0].url, tmp_path / "audit.sqlite"))
    env.update({"GATEWAY_POLICIES_RESOLVER_URL": reference[0].url, "GATEWAY_AUDIT_MODE": "durable",
                "GATEWAY_SERVER_LOG_LEVEL": "warning"})  # fmt: skip
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve", "--port", str(port), "--workers", "2"],
        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    stack = Stack(idp=idp, upstream_url=echo[0].url, gateway=_Port(port), audit_path=tmp_path / "audit.sqlite",  # type: ignore[arg-type]
                  app=None)  # fmt: skip
    try:
        wait_for_port(port, timeout=30)
        stack.wait_ready(timeout=30)
        wait_until(lambda: len(workers_of(process)) == 2, timeout=30, message="two workers")
        yield process, stack
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


class Load:
    """Four clients, each a new connection per request, until stopped (60 s at most)."""

    def __init__(self, stack: Stack, token: str) -> None:
        self.stack = stack
        self.token = token
        self.stop = threading.Event()
        self.outcomes: list[tuple[float, str, str | None]] = []  # (time, status or error, decision id)
        self._lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(4)]

    def _run(self) -> None:
        end = time.monotonic() + 60
        while not self.stop.is_set() and time.monotonic() < end:
            conn = http.client.HTTPConnection("127.0.0.1", self.stack.port, timeout=10)
            try:
                conn.request("GET", PATH, headers={"Authorization": f"Bearer {self.token}", "X-Purpose": SUPPORT})
                response = conn.getresponse()
                response.read()
                outcome, decision_id = str(response.status), response.getheader("X-Decision-Id")
            except (OSError, http.client.HTTPException) as exc:
                outcome, decision_id = type(exc).__name__, None
            finally:
                conn.close()
            with self._lock:
                self.outcomes.append((time.monotonic(), outcome, decision_id))

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(30)


def test_a_worker_killed_under_load(served: tuple[subprocess.Popen[bytes], Stack], ledger: Ledger) -> None:
    process, stack = served
    ledger.fault("worker killed with SIGKILL under load")
    token = stack.mint(A, roles=["Support.Agent"])
    before = {w.pid for w in workers_of(process)}
    with Load(stack, token) as load:
        wait_until(lambda: len(load.outcomes) >= 100, timeout=30, message="100 requests answered")
        victim = sorted(before)[0]
        os.kill(victim, signal.SIGKILL)
        killed_at = time.monotonic()
        wait_until(
            lambda: len({w.pid for w in workers_of(process)} - before) == 1, timeout=30,
            message="a replacement worker started",
        )
        served_after = lambda: sum(1 for t, o, _ in load.outcomes if t > killed_at + 0.5 and o == "200")  # noqa: E731
        wait_until(lambda: served_after() >= 100, timeout=30, message="100 requests served after the kill")
    assert process.poll() is None, "the supervisor died with its worker"
    outcomes = Counter(outcome for _, outcome, _ in load.outcomes)
    errors = {k: v for k, v in outcomes.items() if not k.isdigit()}
    assert set(outcomes) - set(errors) == {"200"}, f"a wrong status under the fault: {outcomes}"
    assert sum(errors.values()) <= 8, f"more failures than in-flight requests: {errors}"
    for _, _, decision_id in load.outcomes:
        ledger.requests += 1
        if decision_id:
            ledger._pending.setdefault(stack.audit_path, set()).add(decision_id)
        else:
            ledger.unanswered += 1
    process.send_signal(signal.SIGTERM)
    assert process.wait(30) == 0
    missing = ledger.reconcile(stack.audit_path, timeout=10)
    assert not missing, f"{len(missing)} acknowledged decisions missing from the store (durable mode)"
    print(f"\nworker kill: {dict(outcomes)}; replacement started; {len(load.outcomes)} requests")


@pytest.fixture
def served_with_own_policies(idp: DevIdP, echo: tuple[ThreadedServer, Counting],
                             reference: tuple[ThreadedServer, Counting], tmp_path: Path,
                             ledger: Ledger) -> Iterator[tuple[subprocess.Popen[bytes], Stack, Path]]:  # fmt: skip
    policies = tmp_path / "policies"
    shutil.copytree(PROJECT_ROOT / "policies", policies)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.update(gateway_env(idp, echo[0].url, tmp_path / "audit.sqlite"))
    env.update({"GATEWAY_POLICIES_RESOLVER_URL": reference[0].url, "GATEWAY_POLICIES_DIR": str(policies),
                "GATEWAY_POLICIES_WATCH_INTERVAL_SECONDS": "0.2", "GATEWAY_SERVER_LOG_LEVEL": "warning"})  # fmt: skip
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve", "--port", str(port), "--workers", "2"],
        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    stack = Stack(idp=idp, upstream_url=echo[0].url, gateway=_Port(port), audit_path=tmp_path / "audit.sqlite",  # type: ignore[arg-type]
                  app=None)  # fmt: skip
    try:
        wait_for_port(port, timeout=30)
        stack.wait_ready(timeout=30)
        wait_until(lambda: len(workers_of(process)) == 2, timeout=30, message="two workers")
        yield process, stack, policies
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        assert not ledger.reconcile(stack.audit_path)


def test_a_worker_replaced_while_a_policy_file_is_broken_still_starts(
    served_with_own_policies: tuple[subprocess.Popen[bytes], Stack, Path], ledger: Ledger
) -> None:
    process, stack, policies = served_with_own_policies
    ledger.fault("worker killed while a policy file is broken")
    roles = policies / "base" / "roles.cedar"
    roles.write_text(roles.read_text() + "\npermit (principal, action, resource) when { ;\n")
    wait_until(
        lambda: "policy_error" in stack.http("GET", "/readyz").json(), timeout=10, message="the broken file noticed"
    )
    before = {w.pid for w in workers_of(process)}
    os.kill(sorted(before)[0], signal.SIGKILL)

    # One replacement that stays up, not a string of replacements dying at start-up: once the first
    # one is there, watch it through its start-up (the policy load that would fail) and beyond.
    fresh: set[int] = set(
        wait_until(lambda: {w.pid for w in workers_of(process)} - before, timeout=15, message="a replacement worker")
    )
    end = time.monotonic() + 6
    while time.monotonic() < end:
        fresh |= {w.pid for w in workers_of(process)} - before
        time.sleep(0.2)
    alive = {w.pid for w in workers_of(process)} & fresh
    assert len(fresh) == 1 and alive == fresh, f"replacements started: {len(fresh)}, alive at the end: {len(alive)}"
    reply = stack.http("GET", PATH, token=stack.mint(A, roles=["Support.Agent"]), purpose=SUPPORT)
    ledger.saw(stack.audit_path, reply)
    assert reply.status == 200
