"""kill -9 a durable writer mid-stream: every decision acknowledged before the kill is in the store."""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

from gateway.audit.maintenance import verify
from gateway.audit.schema import connect_reader

from .helpers import make_record, reader, running, settings

ROOT = Path(__file__).resolve().parents[2]
CHILD = Path(__file__).with_name("crash_writer.py")


def _read_acknowledged(process: subprocess.Popen[bytes], wanted: int, timeout: float) -> bytes:
    """Read the child's stdout until ``wanted`` ids were acknowledged (or ``timeout``)."""
    assert process.stdout is not None
    data = b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while data.count(b"\n") < wanted + 1 and time.monotonic() < deadline:
            if selector.select(timeout=0.5):
                chunk = os.read(process.stdout.fileno(), 65536)
                if not chunk:
                    break
                data += chunk
    return data


async def test_every_acknowledged_record_survives_kill_9(tmp_path: Path) -> None:
    store = tmp_path / "audit.sqlite"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [sys.executable, str(CHILD), str(store), "16"], stdout=subprocess.PIPE, cwd=str(ROOT), env=env
    )
    try:
        data = _read_acknowledged(process, wanted=600, timeout=60)
        assert data.startswith(b"ready\n"), data[:200]
        process.send_signal(signal.SIGKILL)  # mid-stream: producers are awaiting commits right now
        rest, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    assert process.returncode == -signal.SIGKILL
    lines = (data + rest).split(b"\n")[1:-1]  # drop "ready" and a possibly incomplete last line
    acknowledged = {line.decode() for line in lines}
    assert len(acknowledged) >= 600

    with contextlib.closing(reader(store)) as conn:
        stored = {row[0] for row in conn.execute("SELECT decision_id FROM decisions")}
    assert acknowledged <= stored  # nothing acknowledged was lost

    # A restarted writer with the same gateway id continues the sequence; verify finds no loss:
    # numbers handed out but never committed are requests that never got a response (durable mode).
    async with running(settings(store, gateway_id="crash", mode="durable")) as log:
        await log.record(make_record())
    with contextlib.closing(connect_reader(str(store))) as conn:
        report = verify(conn)
    assert report.ok
    assert all(gap.kind == "unclean_end" and gap.mode == "durable" for gap in report.gateways[0].gaps)
    # the hash chain survived the kill: every stored record checked, the new session linked to the last
    assert not report.gateways[0].breaks
    assert report.gateways[0].chained == len(stored) + 1
