"""``gateway demo-upstream`` as a real process: serves, and stops cleanly on SIGTERM and SIGINT."""

from __future__ import annotations

import argparse
import json
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from gateway.demo import commands
from gateway.demo.tenants import CONTOSO_TENANT, UPSTREAM_PORT
from tests.support.servers import free_port, wait_for_port

ROOT = Path(__file__).resolve().parents[2]
STOP_TIMEOUT = 20.0


def test_defaults() -> None:
    parser = argparse.ArgumentParser()
    commands.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["demo-upstream"])
    assert (args.host, args.port, args.func) == ("127.0.0.1", UPSTREAM_PORT, commands.run_demo_upstream)
    assert parser.parse_args(["demo-upstream", "--port", "9123", "--host", "::1"]).port == 9123


@contextmanager
def demo_upstream(port: int) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "demo-upstream", "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=STOP_TIMEOUT)


def get_json(port: int, path: str) -> object:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        assert response.status == 200
        return json.loads(response.read())


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGTERM, 0), (signal.SIGINT, 0)])
def test_serves_and_stops_on_signal(signum: int, status: int) -> None:
    port = free_port()
    with demo_upstream(port) as process:
        wait_for_port(port)
        assert get_json(port, "/healthz") == {"status": "ok"}
        tenants = get_json(port, "/tenants")
        assert isinstance(tenants, dict) and tenants["tenants"][0]["id"] == CONTOSO_TENANT
        process.send_signal(signum)
        assert process.wait(timeout=STOP_TIMEOUT) == status
        _, stderr = process.communicate(timeout=STOP_TIMEOUT)
        assert b"Traceback" not in stderr
        assert f"http://127.0.0.1:{port}".encode() in stderr


def test_port_in_use_is_an_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with demo_upstream(port) as process:
            assert process.wait(timeout=STOP_TIMEOUT) != 0
