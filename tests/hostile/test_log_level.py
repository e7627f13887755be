"""A log level never switches a security control off (issue 17): with ``server.log_level = "trace"``
uvicorn wraps the app in its message logger, and the hardened protocol must still apply the gateway's
configured head limits and report its refusals to the gateway (they are wired to it explicitly). Run as
a real ``gateway serve`` process; the in-process counterpart is in ``tests/core/test_http_protocol.py``."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.http_protocol import REQUEST_LINE_ALLOWANCE
from tests.demo.test_ports import reserved_ports
from tests.support.echo_upstream import echo_upstream
from tests.support.idp import DevIdP
from tests.support.poll import wait_until
from tests.support.servers import serve, wait_for_port
from tests.support.stack import gateway_env

MAX_HEADER = 4096  # configured: the protocol cuts an unfinished head off past 4 KiB + REQUEST_LINE_ALLOWANCE
HEAD_TIMEOUT = 1  # configured: a head still incomplete after 1 s gets 408
# Past the configured cap (20 KiB), well short of the one the old defaults gave (48 KiB): one send,
# so the protocol has read all of it when it answers and closes (no reset to race the answer).
ENDLESS_HEAD = b"GET /tenants HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * (MAX_HEADER + REQUEST_LINE_ALLOWANCE + 1024)


@pytest.fixture
def traced(idp: DevIdP, tmp_path: Path) -> Iterator[tuple[int, Path]]:
    audit = tmp_path / "audit.sqlite"
    with serve(echo_upstream) as upstream, reserved_ports(1) as (port,):
        env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
        env.update(gateway_env(idp, upstream.url, audit))
        env.update({"GATEWAY_SERVER_LOG_LEVEL": "trace", "GATEWAY_SERVER_MAX_HEADER_BYTES": str(MAX_HEADER),
                    "GATEWAY_SERVER_HEADER_TIMEOUT_SECONDS": str(HEAD_TIMEOUT)})  # fmt: skip
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "serve", "--port", str(port)],
            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            wait_for_port(port, timeout=30)
            yield port, audit
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


def exchange(port: int, data: bytes, wait: float) -> bytes:
    """Send ``data`` and read what comes back within ``wait`` seconds (bounded)."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as sock:
        sock.sendall(data)
        out = b""
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            out += chunk
        return out


def audited_statuses(audit: Path) -> list[int]:
    def two_or_more() -> list[int] | None:
        if not audit.exists():
            return None
        with contextlib.closing(sqlite3.connect(f"file:{audit}?mode=ro", uri=True)) as conn:
            found = [row[0] for row in conn.execute("SELECT status FROM decisions ORDER BY id")]
        return found if len(found) >= 2 else None

    return wait_until(two_or_more, interval=0.1, message="two decisions in the audit store")


def test_trace_logging_keeps_the_configured_head_limits_and_audits_their_refusals(traced: tuple[int, Path]) -> None:
    port, audit = traced
    reply = exchange(port, ENDLESS_HEAD, wait=5)  # answered by the protocol at its cap, at once
    assert reply.startswith(b"HTTP/1.1 431"), reply[:200]
    assert b"x-decision-id" in reply.lower() and b"head_too_large" in reply
    # a head that stops: 408 after the configured second, well inside a 5 s wait for the old 10 s default
    slow = exchange(port, b"GET /tenants HTTP/1.1\r\nHost: x\r\n", wait=5)
    assert slow.startswith(b"HTTP/1.1 408"), slow[:200]
    assert sorted(audited_statuses(audit)) == [408, 431]  # the protocol's own answers, audited
