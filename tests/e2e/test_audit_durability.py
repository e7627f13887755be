"""The audit trail through the real gateway process: kill -9 in durable mode loses no answered request's
record; a burst larger than the async queue loses nothing."""

from __future__ import annotations

import http.client
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.demo.tenants import CONTOSO_TENANT as A
from tests.support.idp import DevIdP
from tests.support.servers import ThreadedServer, free_port, wait_for_port
from tests.support.stack import Stack, gateway_env, process_stack

SUPPORT = "essential.service.operations.support"
MAX_REQUESTS = 3000
LOAD_SECONDS = 2.0


def start(idp: DevIdP, upstream: ThreadedServer, audit: Path, **env: str) -> tuple[subprocess.Popen[bytes], Stack]:
    port = free_port()
    full = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    full.update(gateway_env(idp, upstream.url, audit, **env))
    process = subprocess.Popen([sys.executable, "-m", "gateway.cli", "serve", "--port", str(port)], env=full,
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    stack = process_stack(idp, port, upstream.url, audit)
    wait_for_port(port, 30)
    stack.wait_ready(30)
    return process, stack


def stored_ids(audit: Path) -> set[str]:
    with sqlite3.connect(f"file:{audit}?mode=ro", uri=True) as conn:
        return {row[0] for row in conn.execute("SELECT decision_id FROM decisions")}


class Hammer:
    """Client threads sending requests until stopped or out of budget, noting every X-Decision-Id."""

    def __init__(self, stack: Stack, token: str, threads: int) -> None:
        self.stack = stack
        self.token = token
        self.answered: list[str] = []
        self.errors: list[str] = []
        self._budget = MAX_REQUESTS
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._work, args=(n,)) for n in range(threads)]
        for thread in self._threads:
            thread.start()

    def _take(self) -> bool:
        with self._lock:
            if self._stop.is_set() or self._budget <= 0:
                return False
            self._budget -= 1
            return True

    def _work(self, n: int) -> None:
        i = 0
        while self._take():
            i += 1
            try:
                reply = self.stack.http("GET", f"/tenants/{A}/contacts/ct-a-00{1 + (n + i) % 9}", token=self.token,
                                        purpose=SUPPORT, timeout=5)
            except (OSError, http.client.HTTPException) as exc:  # a killed gateway cuts an answer short
                with self._lock:
                    self.errors.append(type(exc).__name__)
                continue
            with self._lock:
                self.answered.append(reply.header("X-Decision-Id") or f"missing header ({reply.status})")

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(15)


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for p in started:
        if p.poll() is None:
            p.kill()
            p.wait(10)


def test_kill_9_in_durable_mode_keeps_every_answered_record(
    idp: DevIdP, reference_upstream: ThreadedServer, tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    audit = tmp_path / "audit.sqlite"
    process, stack = start(idp, reference_upstream, audit, GATEWAY_AUDIT_MODE="durable")
    procs.append(process)
    token = stack.mint(A, roles=["Support.Agent"])
    load = Hammer(stack, token, threads=8)
    time.sleep(LOAD_SECONDS)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(10)
    load.stop()
    snapshot = load.answered
    assert len(snapshot) > 20, "the load did not get going"
    missing = set(snapshot) - stored_ids(audit)
    assert not missing, f"{len(missing)} answered requests have no record"


def test_burst_larger_than_the_async_queue_loses_nothing(
    idp: DevIdP, reference_upstream: ThreadedServer, tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    audit = tmp_path / "audit.sqlite"
    process, stack = start(idp, reference_upstream, audit, GATEWAY_AUDIT_MODE="async",
                           GATEWAY_AUDIT_QUEUE_SIZE="8", GATEWAY_AUDIT_BATCH_SIZE="4")
    procs.append(process)
    token = stack.mint(A, roles=["Support.Agent"])
    load = Hammer(stack, token, threads=32)
    time.sleep(1.5)
    load.stop()
    process.send_signal(signal.SIGTERM)
    process.wait(30)
    snapshot = load.answered
    assert not load.errors
    assert len(snapshot) > 32
    assert set(snapshot) <= stored_ids(audit)
    verify = subprocess.run([sys.executable, "-m", "gateway.cli", "audit", "verify", "--path", str(audit)],
                            capture_output=True, text=True, timeout=60)
    assert verify.returncode == 0, verify.stdout + verify.stderr
