"""The audit store unwritable (locked, disk full, read-only) and the OTLP collector down, seen from the
client of the gateway: what it is answered, what ``/readyz`` says, and that no record is lost.

How the store is made unwritable, each a real condition going through the writer's ordinary path:
- locked: another connection holds the write lock (a backup, a stuck ``sqlite3`` shell); works anywhere.
- disk full: the store lives on a 1 MiB tmpfs that is then filled (needs ``mount``: skipped without).
- read-only: the store's files are made immutable with ``chattr +i``, which stops writes even for
  root, where ``chmod`` does not (needs an ext2/3/4-like file system and the capability: skipped without).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from oteltap import OtelTapHttpProtobufReceiver, OtelTapHttpProtobufReceiverSettings

from gateway.demo.tenants import CONTOSO_TENANT as A
from tests.hostile.support import SUPPORT, Counting, Ledger, call, gateway, stored_record
from tests.support.idp import DevIdP
from tests.support.poll import wait_until, wait_until_async
from tests.support.servers import ThreadedServer, free_port
from tests.support.stack import Reply, Stack

PATH = f"/tenants/{A}/contacts/echo-1"
FAST_AUDIT: dict[str, Any] = {"busy_timeout_seconds": 0.05, "close_timeout_seconds": 10.0}


def readiness(stack: Stack) -> dict[str, Any]:
    reply = stack.http("GET", "/readyz", timeout=5)
    document: dict[str, Any] = reply.json()
    document["http_status"] = reply.status
    return document


# -- ways to make the store unwritable ---------------------------------------------------------------------


class StoreFault:
    """``break_()`` makes the store unwritable, ``repair()`` undoes it; ``path`` is where the store lives."""

    name = ""

    def __init__(self, root: Path) -> None:
        self.path = root / "audit.sqlite"

    def break_(self) -> None:
        raise NotImplementedError

    def repair(self) -> None:
        raise NotImplementedError

    def cleanup(self) -> None:
        self.repair()


class Locked(StoreFault):
    name = "store locked by another writer"

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.conn: sqlite3.Connection | None = None

    def break_(self) -> None:
        self.conn = sqlite3.connect(str(self.path), isolation_level=None)
        self.conn.execute("BEGIN IMMEDIATE")

    def repair(self) -> None:
        if self.conn is not None:
            self.conn.execute("ROLLBACK")
            self.conn.close()
            self.conn = None


class DiskFull(StoreFault):
    name = "disk full"

    def __init__(self, root: Path) -> None:
        self.mount = root / "tmpfs"
        self.mount.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(self.mount)],
                              capture_output=True, text=True, check=False)  # fmt: skip
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
        super().__init__(self.mount)
        self.filler = self.mount / "filler"

    def break_(self) -> None:
        with contextlib.suppress(OSError), self.filler.open("wb", buffering=0) as handle:
            for _ in range(1024):  # 1 MiB at most: the file system is smaller
                handle.write(b"f" * 4096)

    def repair(self) -> None:
        self.filler.unlink(missing_ok=True)

    def cleanup(self) -> None:
        self.repair()
        subprocess.run(["umount", "-l", str(self.mount)], capture_output=True, check=False)


class ReadOnly(StoreFault):
    name = "store read-only (immutable files)"

    def files(self) -> list[str]:
        return [str(p) for p in (self.path, Path(f"{self.path}-wal")) if p.exists()]

    def break_(self) -> None:
        done = subprocess.run(["chattr", "+i", *self.files()], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            pytest.skip(f"cannot make files immutable here: {done.stderr.strip()}")

    def repair(self) -> None:
        subprocess.run(["chattr", "-i", *self.files()], capture_output=True, check=False)


FAULTS: dict[str, type[StoreFault]] = {"locked": Locked, "disk full": DiskFull, "read-only": ReadOnly}


@pytest.fixture
def store_fault(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFault]:
    fault = FAULTS[request.param](tmp_path)
    try:
        yield fault
    finally:
        fault.cleanup()


# -- fail closed -----------------------------------------------------------------------------------------


def send_until(
    stack: Stack, ledger: Ledger, token: str, done: Callable[[Reply], bool], limit: int = 400
) -> list[Reply]:
    replies: list[Reply] = []
    for _ in range(limit):
        reply = call(stack, ledger, "GET", PATH, token=token, purpose=SUPPORT)
        assert reply is not None
        replies.append(reply)
        if done(reply):
            return replies
        time.sleep(0.01)
    raise AssertionError(f"not reached after {limit} requests: {Counter(r.status for r in replies)}")


@pytest.mark.parametrize(
    ("store_fault", "mode"),
    [("locked", "async"), ("locked", "durable"), ("disk full", "async"), ("read-only", "async")],
    indirect=["store_fault"],
)  # fmt: skip
def test_fail_closed_refuses_with_503_and_loses_nothing(
    store_fault: StoreFault, mode: str, idp: DevIdP, echo: tuple[ThreadedServer, Counting],
    reference: tuple[ThreadedServer, Counting], ledger: Ledger,
) -> None:  # fmt: skip
    ledger.fault(f"audit: {store_fault.name}, fail_closed, {mode}")
    with gateway(idp, echo[0].url, store_fault.path, resolver_url=reference[0].url, audit_overrides=FAST_AUDIT,
                 GATEWAY_AUDIT_MODE=mode, GATEWAY_AUDIT_FAIL_CLOSED="true") as stack:  # fmt: skip
        token = stack.mint(A, roles=["Support.Agent"])
        assert call(stack, ledger, "GET", PATH, token=token, purpose=SUPPORT).status == 200  # type: ignore[union-attr]
        store_fault.break_()
        mark = echo[1].mark()
        replies = send_until(stack, ledger, token, lambda r: r.status == 503)
        refused = replies[-1]
        assert refused.header("Content-Type") == "application/problem+json" and refused.header("X-Decision-Id")
        assert set(r.status for r in replies) <= {200, 503}
        forwarded = {s.decision_id for s in echo[1].proxied_since(mark)}
        ready = readiness(stack)
        assert ready["http_status"] == 503 and ready["checks"]["audit"] is False and ready["audit_error"]
        unauthenticated = call(stack, ledger, "GET", PATH, purpose=SUPPORT)  # a refusal is refused too
        assert unauthenticated is not None and unauthenticated.status == 503
        store_fault.repair()
        wait_until(lambda: readiness(stack)["http_status"] == 200, timeout=20, message="the gateway ready again")
        after = call(stack, ledger, "GET", PATH, token=token, purpose=SUPPORT)
        assert after is not None and after.status == 200
    missing = ledger.reconcile(stack.audit_path, timeout=10)
    assert not missing, f"{len(missing)} records lost"
    for reply in replies:
        if reply.status != 503:
            continue
        decision_id = reply.header("X-Decision-Id") or ""
        record = stored_record(stack.audit_path, decision_id)
        assert record is not None and (record["status"], record["reason"]) == (503, "audit_unavailable")
        # A request answered 503 was either never forwarded, or its record says the upstream had it.
        assert decision_id not in forwarded or "upstream_status" in record["extra"], (
            "answered 503 and recorded as refused, but the upstream had already performed it"
        )


@pytest.mark.parametrize("store_fault", ["locked"], indirect=True)
def test_fail_open_goes_on_loudly_and_catches_up(
    store_fault: StoreFault, idp: DevIdP, echo: tuple[ThreadedServer, Counting],
    reference: tuple[ThreadedServer, Counting], ledger: Ledger, caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    """fail_closed = false: requests go on while the store is down; /readyz and the log say so; the
    records wait in the queue and are all written once the store is back (the queue did not fill)."""
    ledger.fault(f"audit: {store_fault.name}, fail_closed=false")
    with gateway(idp, echo[0].url, store_fault.path, resolver_url=reference[0].url, audit_overrides=FAST_AUDIT,
                 GATEWAY_AUDIT_FAIL_CLOSED="false") as stack:  # fmt: skip
        token = stack.mint(A, roles=["Support.Agent"])
        assert call(stack, ledger, "GET", PATH, token=token, purpose=SUPPORT).status == 200  # type: ignore[union-attr]
        store_fault.break_()
        send_until(stack, ledger, token, lambda r: not stack.app.audit.healthy)
        statuses = [call(stack, ledger, "GET", PATH, token=token, purpose=SUPPORT).status for _ in range(20)]  # type: ignore[union-attr]
        assert statuses == [200] * 20
        ready = readiness(stack)
        assert ready["http_status"] == 503 and ready["checks"]["audit"] is False and ready["audit_error"]
        assert any("AUDIT STORE UNWRITABLE" in r.getMessage() for r in caplog.records)
        store_fault.repair()
        wait_until(lambda: readiness(stack)["http_status"] == 200, timeout=20, message="the gateway ready again")
    missing = ledger.reconcile(stack.audit_path, timeout=10)
    assert not missing, f"{len(missing)} records lost"


# -- the OTLP collector ------------------------------------------------------------------------------------


async def test_collector_down_for_a_while_delays_spans_and_loses_none(
    idp: DevIdP, echo: tuple[ThreadedServer, Counting], reference: tuple[ThreadedServer, Counting],
    tmp_path: Path, ledger: Ledger, caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    """Minutes of outage compressed: a 0.3 s back-off cap instead of 30 s, so three seconds down is about
    ten failed attempts. Clients see nothing of it; once the collector is back every decision arrives
    as exactly one span."""
    import logging

    caplog.set_level(logging.CRITICAL, logger="opentelemetry")
    ledger.fault("OTLP collector down, then back")
    port = free_port()
    overrides = {**FAST_AUDIT, "export_interval_seconds": 0.05, "export_max_backoff_seconds": 0.3,
                 "otlp_timeout_seconds": 1.0}  # fmt: skip
    collector = f"http://127.0.0.1:{port}"
    with gateway(idp, echo[0].url, tmp_path / "audit.sqlite", resolver_url=reference[0].url,
                 audit_overrides=overrides, GATEWAY_AUDIT_OTLP_ENDPOINT=collector) as stack:  # fmt: skip
        token = stack.mint(A, roles=["Support.Agent"])
        exporter = stack.app.audit.exporter
        assert exporter is not None
        ids: list[str] = []
        for i in range(40):
            reply = await asyncio.to_thread(call, stack, ledger, "GET", PATH, token=token if i % 4 else None,
                                            purpose=SUPPORT)  # fmt: skip
            assert reply is not None and reply.status == (200 if i % 4 else 401)
            ids.append(reply.header("X-Decision-Id") or "")
        await wait_until_async(lambda: exporter.failures >= 8, timeout=20, interval=0.1, message="8 failed exports")
        assert exporter.cursor == 0
        assert (await asyncio.to_thread(readiness, stack))["http_status"] == 200
        spans: list[Any] = []
        async with OtelTapHttpProtobufReceiver(OtelTapHttpProtobufReceiverSettings(http_port=port)) as tap:

            async def collect() -> None:
                async for span in tap.stream_traces():
                    spans.append(span)

            task = asyncio.create_task(collect())
            try:
                await wait_until_async(lambda: len(spans) >= len(ids), timeout=30, interval=0.1,
                                       message=lambda: f"{len(ids)} spans at the collector ({len(spans)} there)")
                await asyncio.sleep(0.3)  # room for a duplicate to show up, if one were sent
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
    exported = Counter(_attribute(span, "privacy.decision.id") for span in spans)
    assert exported == Counter(dict.fromkeys(ids, 1)), "spans missing or duplicated"
    missing = ledger.reconcile(stack.audit_path)
    assert not missing


def _attribute(span: Any, key: str) -> str:
    for kv in span.attributes:
        if kv.key == key:
            return str(kv.value.string_value)
    return ""


def test_chattr_and_mount_are_cleaned_up(tmp_path: Path) -> None:
    """The faults above leave nothing immutable or mounted behind (pytest must be able to remove tmp)."""
    probe = tmp_path / "probe"
    probe.write_text("x")
    fault = ReadOnly(tmp_path)
    fault.path = probe
    if subprocess.run(["chattr", "+i", str(probe)], capture_output=True, check=False).returncode != 0:
        pytest.skip("chattr not available")
    fault.repair()
    probe.unlink()
    assert not probe.exists()
    assert os.path.ismount("/") and not any(
        line.split()[1].startswith(str(tmp_path)) for line in Path("/proc/mounts").read_text().splitlines()
    )
