"""A bounded soak: ``gateway serve`` under a mixed load while its neighbours fail in turn.

    .venv/bin/python -m tests.hostile.soak --duration 120 [--workers 2] [--rate 150] [--out FILE]

Everything runs on loopback: the dev IdP (behind a fault injector), the reference services (behind a
request counter), and the gateway as a real ``gateway serve`` process. Clients send a fixed mix of
requests, allowed and refused, including hostile raw HTTP; every ``--fault-every`` seconds one fault
is switched on for a while and off again: the IdP down with a key rotation, the key endpoint
answering garbage, the upstream (and the facts service) refusing, the audit store locked, a policy
file broken, a slowloris swarm, and with ``--workers 2`` or more a worker killed with SIGKILL.

Each request kind's normal statuses are calibrated before the faults begin; during a fault (and a
short grace period after) a documented set of extra statuses is acceptable, e.g. 503 while the audit
store is locked. Anything else is *unexpected*; a 2xx for a request that policy refuses, or such a
request reaching the upstream, is a *wrong allow*. At the end every decision id a client saw is
looked up in the audit store (*lost*). Every 5 s a line reports throughput, error rate, latency
percentiles of the allowed requests, the gateway's RSS and open file descriptors, and /readyz.

Bounds: at most 600 s of load, every loop has a deadline, all processes are stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import psutil

from gateway.demo.tenants import CONTOSO_TENANT as A
from gateway.demo.tenants import FABRIKAM_TENANT as B
from gateway.demo.upstream import create_upstream_app
from tests.hostile.support import Counting, parse_replies
from tests.identity.faults import FaultyAuthority
from tests.support.idp import DevIdP, running_dev_idp
from tests.support.servers import ThreadedServer, free_port, wait_for_port
from tests.support.stack import gateway_env

PROJECT_ROOT = Path(__file__).resolve().parents[2]  # the checkout

MAX_DURATION = 600.0
SAMPLE_SECONDS = 5.0
GRACE_SECONDS = 6.0
SUPPORT = "essential.service.operations.support"


# -- the request mix -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Kind:
    name: str
    weight: int
    must_deny: bool
    method: str = "GET"
    path: str = ""
    token: str = ""  # key into the token table; "" = no Authorization header
    purpose: str | None = SUPPORT
    body: bytes | None = None
    headers: tuple[tuple[str, str], ...] = ()
    raw: bytes | None = None  # sent as is on a fresh connection instead


def kinds() -> list[Kind]:
    send = json.dumps({"raw": "VG86IGJvYkBleGFtcGxlLmNvbQ0KU3ViamVjdDogaGkNCg0KaGk"}).encode()
    return [
        Kind("read contact", 20, False, path=f"/tenants/{A}/contacts/ct-a-001", token="agent"),
        Kind("read contact, fresh key", 6, False, path=f"/tenants/{A}/contacts/ct-a-002", token="agent-fresh"),
        Kind("read payment (masked)", 10, False, path=f"/tenants/{A}/payments/pay-a-005", token="billing",
             purpose="essential.service.payment_processing"),
        Kind("list own mail", 8, False, path="/gmail/v1/users/me/messages", token="user", purpose="essential.service"),
        Kind("send mail", 5, False, method="POST", path="/gmail/v1/users/me/messages/send", token="mail",
             purpose="essential.service", body=send, headers=(("Content-Type", "application/json"),)),
        Kind("invite (lifted body)", 4, False, method="POST", path=f"/tenants/{A}/surveys/sv-a-001/invitations",
             token="marketing", purpose="marketing.communications.email",
             body=b'{"email": "someone.new@example.com"}', headers=(("Content-Type", "application/json"),)),
        Kind("invite opted-out address", 2, True, method="POST", path=f"/tenants/{A}/surveys/sv-a-001/invitations",
             token="marketing", purpose="marketing.communications.email", body=b'{"email": "optout@example.com"}',
             headers=(("Content-Type", "application/json"),)),
        Kind("other tenant", 6, True, path=f"/tenants/{B}/contacts/ct-b-001", token="agent"),
        Kind("wrong purpose", 4, True, path=f"/tenants/{A}/contacts/ct-a-001", token="agent",
             purpose="marketing.advertising"),
        Kind("unmapped method", 3, True, method="DELETE", path=f"/tenants/{A}/contacts/ct-a-001", token="agent"),
        Kind("path trick", 4, True, path=f"/tenants/{A}/%2e%2e/{B}/contacts", token="agent"),
        Kind("no token", 4, True, path=f"/tenants/{A}/contacts/ct-a-001"),
        Kind("expired token", 3, True, path=f"/tenants/{A}/contacts/ct-a-001", token="expired"),
        Kind("unknown key", 3, True, path=f"/tenants/{A}/contacts/ct-a-001", token="forged"),
        Kind("raw: smuggling CL+TE", 2, True, raw=b"POST /gmail/v1/users/me/messages/send HTTP/1.1\r\nHost: g\r\n"
             b"Authorization: Bearer {mail}\r\nX-Purpose: essential.service\r\nContent-Length: 4\r\n"
             b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\nGET /tenants/" + B.encode()
             + b"/contacts HTTP/1.1\r\nHost: g\r\n\r\n"),
        Kind("raw: not HTTP", 2, True, raw=b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 hello?\r\n\r\n"),
        Kind("raw: duplicate Authorization", 2, True, raw=b"GET /tenants/" + A.encode() + b"/contacts/ct-a-001 "
             b"HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer {agent}\r\nAuthorization: Bearer {agent}\r\n"
             b"X-Purpose: " + SUPPORT.encode() + b"\r\nConnection: close\r\n\r\n"),
    ]  # fmt: skip


# -- faults --------------------------------------------------------------------------------------------


class World:
    """The neighbours of the gateway, and the switches that break them."""

    def __init__(self, root: Path, idp: DevIdP, authority: FaultyAuthority, upstream: ThreadedServer,
                 counting: Counting, policies: Path, audit_path: Path) -> None:  # fmt: skip
        self.root = root
        self.idp = idp
        self.authority = authority
        self.upstream = upstream
        self.counting = counting
        self.policies = policies
        self.audit_path = audit_path
        self.gateway: subprocess.Popen[bytes] | None = None
        self.tokens: dict[str, str] = {}
        self._lock_conn: sqlite3.Connection | None = None
        self._saved_policy = ""
        self._slowloris: list[socket.socket] = []
        self._slowloris_stop = threading.Event()
        self._slowloris_thread: threading.Thread | None = None

    def mint_tokens(self) -> None:
        idp = self.idp
        self.tokens.update(
            agent=idp.mint(A, roles=["Support.Agent"]),
            billing=idp.mint(A, roles=["Billing.Admin"]),
            user=idp.mint(A),
            mail=idp.mint(A, app="mail-backend", roles=["Service.Mail"]),
            marketing=idp.mint(A, roles=["Marketing.Manager"]),
            expired=idp.mint(A, roles=["Support.Agent"], ttl=-3600),
            forged=idp.mint(A, roles=["Support.Agent"], extra_headers={"kid": "never-published"}),
        )
        self.tokens["agent-fresh"] = self.tokens["agent"]

    # Each fault: (name, start, stop, extra acceptable statuses for allowed kinds, for refused kinds).
    def faults(self, workers: int) -> list[tuple[str, Callable[[], None], Callable[[], None], set[str], set[str]]]:
        out = [
            ("identity provider down, key rotated", self._idp_down, self._idp_up, {"401"}, set()),
            ("key endpoint answers garbage", self._jwks_garbage, self._jwks_fine, set(), set()),
            ("upstream and facts service refusing", self._upstream_down, self._upstream_up, {"502", "403"}, set()),
            ("audit store locked", self._lock_store, self._unlock_store, {"503"}, {"503"}),
            ("policy file broken", self._break_policy, self._repair_policy, set(), set()),
            ("slowloris swarm (60 connections)", self._slowloris_on, self._slowloris_off, set(), set()),
        ]
        if workers > 1:
            out.append(("a worker killed (SIGKILL)", self._kill_worker, lambda: None, {"error"}, {"error"}))
        return out

    def _idp_down(self) -> None:
        self.idp.stop()
        self.idp.rotate()
        self.tokens["agent-fresh"] = self.idp.mint(A, roles=["Support.Agent"])  # signed with the new key

    def _idp_up(self) -> None:
        self.idp.start()

    def _jwks_garbage(self) -> None:
        self.authority.faults["keys"] = ("garbage",)
        self.authority.faults["metadata"] = ("garbage",)

    def _jwks_fine(self) -> None:
        self.authority.faults.clear()

    def _upstream_down(self) -> None:
        self.upstream.stop()

    def _upstream_up(self) -> None:
        self.upstream = ThreadedServer(self.counting, port=self.upstream.port).start()

    def _lock_store(self) -> None:
        self._lock_conn = sqlite3.connect(str(self.audit_path), isolation_level=None, timeout=10)
        self._lock_conn.execute("BEGIN IMMEDIATE")

    def _unlock_store(self) -> None:
        if self._lock_conn is not None:
            self._lock_conn.execute("ROLLBACK")
            self._lock_conn.close()
            self._lock_conn = None

    def _break_policy(self) -> None:
        target = self.policies / "base" / "roles.cedar"
        self._saved_policy = target.read_text()
        target.write_text(self._saved_policy + "\npermit (principal, action, resource) when { ;\n")

    def _repair_policy(self) -> None:
        (self.policies / "base" / "roles.cedar").write_text(self._saved_policy)

    def _slowloris_on(self) -> None:
        self._slowloris_stop.clear()
        port = self.port

        def trickle() -> None:
            head = b"GET /tenants/" + A.encode() + b"/contacts HTTP/1.1\r\nHost: g\r\nX-Slow: " + b"s" * 4000
            socks = []
            for _ in range(60):
                with contextlib.suppress(OSError):
                    socks.append(socket.create_connection(("127.0.0.1", port), timeout=2))
            self._slowloris = socks
            sent = 0
            while not self._slowloris_stop.wait(0.5) and sent < len(head):
                for sock in list(socks):
                    try:
                        sock.sendall(head[sent : sent + 1])
                    except OSError:
                        socks.remove(sock)
                sent += 1

        self._slowloris_thread = threading.Thread(target=trickle, daemon=True)
        self._slowloris_thread.start()

    def _slowloris_off(self) -> None:
        self._slowloris_stop.set()
        if self._slowloris_thread is not None:
            self._slowloris_thread.join(10)
        for sock in self._slowloris:
            sock.close()
        self._slowloris = []

    def _kill_worker(self) -> None:
        workers = self.worker_processes()
        if workers:
            os.kill(workers[0].pid, signal.SIGKILL)

    def worker_processes(self) -> list[psutil.Process]:
        if self.gateway is None:
            return []
        out = []
        for child in psutil.Process(self.gateway.pid).children():
            with contextlib.suppress(psutil.Error):
                if "resource_tracker" not in " ".join(child.cmdline()):
                    out.append(child)
        return out

    @property
    def port(self) -> int:
        return int(self._port)

    _port = 0


# -- measuring -----------------------------------------------------------------------------------------


@dataclass
class Bucket:
    start: float
    fault: str = ""
    outcomes: Counter[str] = field(default_factory=Counter)
    unexpected: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    rss_mb: float = 0.0
    fds: int = 0
    ready: str = ""


@dataclass
class Results:
    started: float = field(default_factory=time.monotonic)
    buckets: list[Bucket] = field(default_factory=list)
    decision_ids: dict[str, str] = field(default_factory=dict)  # id -> kind name
    deny_ids: set[str] = field(default_factory=set)
    wrong_allows: list[str] = field(default_factory=list)
    unexpected: Counter[str] = field(default_factory=Counter)
    requests: int = 0
    faults: list[str] = field(default_factory=list)
    by_fault: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    current_fault: str = "(before the first fault)"
    lock: threading.Lock = field(default_factory=threading.Lock)

    def bucket(self) -> Bucket:
        now = time.monotonic()
        if not self.buckets or now - self.buckets[-1].start >= SAMPLE_SECONDS:
            self.buckets.append(Bucket(now))
        return self.buckets[-1]


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# -- the load ------------------------------------------------------------------------------------------


class Load:
    def __init__(self, world: World, results: Results, clients: int, rate: float, deadline: float) -> None:
        self.world = world
        self.results = results
        self.clients = clients
        self.rate = rate
        self.deadline = deadline
        self.kinds = kinds()
        self.weights = [k.weight for k in self.kinds]
        self.expected: dict[str, set[str]] = {}
        self.extra_allowed: set[str] = set()
        self.extra_denied: set[str] = set()
        self.grace_until = 0.0
        self.grace_allowed: set[str] = set()
        self.grace_denied: set[str] = set()
        self.stop = threading.Event()

    async def one(self, session: aiohttp.ClientSession, kind: Kind) -> tuple[str, str | None, float]:
        """(status or error class, decision id, seconds) for one request of ``kind``."""
        started = time.perf_counter()
        tokens = self.world.tokens
        base = f"http://127.0.0.1:{self.world.port}"
        try:
            if kind.raw is not None:
                data = kind.raw.replace(b"{mail}", tokens["mail"].encode())
                data = data.replace(b"{agent}", tokens["agent"].encode())
                reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", self.world.port), 5)
                try:
                    writer.write(data)
                    await writer.drain()
                    raw = await asyncio.wait_for(reader.read(65536), 10)
                finally:
                    writer.close()
                replies = parse_replies(raw)
                if not replies:
                    return "no answer", None, time.perf_counter() - started
                return str(replies[0].status), replies[0].header("X-Decision-Id"), time.perf_counter() - started
            headers = dict(kind.headers)
            if kind.token:
                headers["Authorization"] = f"Bearer {tokens[kind.token]}"
            if kind.purpose:
                headers["X-Purpose"] = kind.purpose
            async with session.request(kind.method, base + kind.path, headers=headers, data=kind.body,
                                       allow_redirects=False) as response:  # fmt: skip
                await response.read()
                return str(response.status), response.headers.get("X-Decision-Id"), time.perf_counter() - started
        except (aiohttp.ClientError, OSError, TimeoutError):
            return "error", None, time.perf_counter() - started

    def judge(self, kind: Kind, outcome: str, decision_id: str | None, seconds: float) -> None:
        results = self.results
        with results.lock:
            results.requests += 1
            bucket = results.bucket()
            bucket.outcomes[outcome] += 1
            bucket.fault = bucket.fault or results.current_fault
            results.by_fault[results.current_fault or "(none)"][outcome] += 1
            if decision_id:
                results.decision_ids[decision_id] = kind.name
                if kind.must_deny:
                    results.deny_ids.add(decision_id)
            if kind.must_deny and outcome.startswith("2"):
                results.wrong_allows.append(f"{kind.name}: {outcome} ({decision_id})")
            acceptable = set(self.expected.get(kind.name, {outcome}))
            acceptable |= self.extra_denied if kind.must_deny else self.extra_allowed
            if time.monotonic() < self.grace_until:
                acceptable |= self.grace_denied if kind.must_deny else self.grace_allowed
            if outcome not in acceptable:
                results.unexpected[f"{kind.name}: {outcome}"] += 1
                bucket.unexpected[f"{kind.name}: {outcome}"] += 1
            elif not kind.must_deny and outcome.startswith("2"):
                bucket.latencies.append(seconds)

    async def calibrate(self, session: aiohttp.ClientSession) -> None:
        for kind in self.kinds:
            seen = set()
            for _ in range(3):
                outcome, _, _ = await self.one(session, kind)
                seen.add(outcome)
            self.expected[kind.name] = seen

    async def client(self, session: aiohttp.ClientSession, index: int) -> None:
        pause = self.clients / self.rate
        rng = random.Random(index)
        next_at = time.monotonic() + rng.random() * pause
        while not self.stop.is_set() and time.monotonic() < self.deadline:
            kind = rng.choices(self.kinds, self.weights)[0]
            outcome, decision_id, seconds = await self.one(session, kind)
            self.judge(kind, outcome, decision_id, seconds)
            next_at += pause
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    async def run(self) -> None:
        connector = aiohttp.TCPConnector(limit=self.clients * 2, force_close=False)
        timeout = aiohttp.ClientTimeout(total=15)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            await self.calibrate(session)
            print("calibrated:", {k: sorted(v) for k, v in self.expected.items()}, flush=True)
            await asyncio.gather(*(self.client(session, i) for i in range(self.clients)))


# -- the run -------------------------------------------------------------------------------------------


def start_gateway(world: World, env: dict[str, str], workers: int, log: Path) -> subprocess.Popen[bytes]:
    port = free_port()
    world._port = port
    full = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    full.update(env)
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "serve", "--port", str(port), "--workers", str(workers)],
            env=full, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=str(PROJECT_ROOT),
        )  # fmt: skip
    wait_for_port(port, timeout=60)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if readyz(port)[0] == 200:
                return process
        time.sleep(0.2)
    raise RuntimeError(f"the gateway did not become ready; see {log}")


def readyz(port: int) -> tuple[int, dict[str, Any]]:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/readyz")
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"{}")
    finally:
        conn.close()


def sampler(world: World, results: Results, stop: threading.Event) -> None:
    while not stop.wait(SAMPLE_SECONDS):
        gateway = world.gateway
        rss = fds = 0
        if gateway is not None:
            with contextlib.suppress(psutil.Error):
                root = psutil.Process(gateway.pid)
                for process in [root, *root.children(recursive=True)]:
                    with contextlib.suppress(psutil.Error):
                        rss += process.memory_info().rss
                        fds += process.num_fds()
        try:
            status, report = readyz(world.port)
            failing = [k for k, v in report.get("checks", {}).items() if not v]
            ready = "ready" if status == 200 else "not ready: " + ",".join(failing)
            if report.get("policy_error"):
                ready += " (policy_error)"
        except OSError as exc:
            ready = f"unreachable ({type(exc).__name__})"
        with results.lock:
            bucket = results.bucket()
            bucket.rss_mb, bucket.fds, bucket.ready = rss / 2**20, fds, ready
            print(report_line(results, bucket), flush=True)


def report_line(results: Results, bucket: Bucket) -> str:
    total = sum(bucket.outcomes.values())
    errors = sum(v for k, v in bucket.outcomes.items() if not k[0].isdigit() or k.startswith("5"))
    lat = bucket.latencies
    return (
        f"t={bucket.start - results.started:6.0f}s  {total / SAMPLE_SECONDS:6.1f} req/s  5xx+err {errors:4d}"
        f"  unexpected {sum(bucket.unexpected.values()):3d}  p50 {percentile(lat, 0.5) * 1000:6.1f} ms"
        f"  p95 {percentile(lat, 0.95) * 1000:6.1f} ms  p99 {percentile(lat, 0.99) * 1000:6.1f} ms"
        f"  rss {bucket.rss_mb:6.1f} MB  fds {bucket.fds:4d}  {bucket.ready:<28} {bucket.fault}"
    )


def stored_ids(path: Path) -> set[str]:
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)) as conn:
        return {row[0] for row in conn.execute("SELECT decision_id FROM decisions")}


@contextlib.contextmanager
def world_on_loopback(root: Path) -> Iterator[World]:
    authority = FaultyAuthority(None)

    def wrap(app: Any) -> Any:
        authority.app = app
        return authority

    policies = root / "policies"
    shutil.copytree(PROJECT_ROOT / "policies", policies)
    counting = Counting(create_upstream_app())
    with running_dev_idp(root / "dev", wrap=wrap) as idp:
        upstream = ThreadedServer(counting, port=free_port()).start()
        world = World(root, idp, authority, upstream, counting, policies, root / "audit.sqlite")
        try:
            yield world
        finally:
            world._slowloris_off()
            world._unlock_store()
            world.upstream.stop()


def run(args: argparse.Namespace) -> dict[str, Any]:
    duration = min(float(args.duration), MAX_DURATION)
    with tempfile.TemporaryDirectory(prefix="gateway-soak-") as tmp, world_on_loopback(Path(tmp)) as world:
        world.mint_tokens()
        env = gateway_env(world.idp, world.upstream.url, world.audit_path)
        env.update({
            "GATEWAY_POLICIES_DIR": str(world.policies), "GATEWAY_POLICIES_WATCH_INTERVAL_SECONDS": "0.5",
            "GATEWAY_IDENTITY_UNKNOWN_KID_COOLDOWN_SECONDS": "1", "GATEWAY_UPSTREAM_READ_TIMEOUT_SECONDS": "3",
            "GATEWAY_UPSTREAM_CONNECT_TIMEOUT_SECONDS": "1", "GATEWAY_AUDIT_MODE": args.audit_mode,
            "GATEWAY_SERVER_HEADER_TIMEOUT_SECONDS": "3", "GATEWAY_SERVER_LOG_LEVEL": "warning",
        })  # fmt: skip
        log = Path(tmp) / "gateway.log"
        world.gateway = start_gateway(world, env, args.workers, log)
        results = Results()
        deadline = time.monotonic() + duration
        load = Load(world, results, args.clients, args.rate, deadline)
        stop_sampling = threading.Event()
        sampling = threading.Thread(target=sampler, args=(world, results, stop_sampling), daemon=True)
        loop_thread = threading.Thread(target=lambda: asyncio.run(load.run()), daemon=True)
        sampling.start()
        loop_thread.start()
        faults = world.faults(args.workers)
        index = 0
        try:
            time.sleep(min(args.fault_every, max(0.0, deadline - time.monotonic())))
            results.current_fault = ""
            while time.monotonic() + 2 < deadline and loop_thread.is_alive():
                name, begin, end, extra_allowed, extra_denied = faults[index % len(faults)]
                index += 1
                window = min(args.fault_every / 2, deadline - time.monotonic() - 1)
                results.current_fault = name
                results.faults.append(name)
                load.extra_allowed, load.extra_denied = set(extra_allowed), set(extra_denied)
                begin()
                time.sleep(max(0.0, window))
                end()
                load.grace_allowed, load.grace_denied = set(extra_allowed), set(extra_denied)
                load.grace_until = time.monotonic() + GRACE_SECONDS
                load.extra_allowed, load.extra_denied = set(), set()
                results.current_fault = ""
                time.sleep(max(0.0, min(args.fault_every / 2, deadline - time.monotonic())))
        finally:
            load.stop.set()
            loop_thread.join(30)
            stop_sampling.set()
            sampling.join(SAMPLE_SECONDS + 5)
            gateway = world.gateway
            gateway.send_signal(signal.SIGTERM)
            try:
                exit_code = gateway.wait(60)
            except subprocess.TimeoutExpired:
                gateway.kill()
                exit_code = gateway.wait(10)
        stored = stored_ids(world.audit_path)
        lost = sorted(set(results.decision_ids) - stored)
        proxied_denies = [s.decision_id for s in world.counting.proxied_since(0) if s.decision_id in results.deny_ids]
        summary = summarize(results, lost, proxied_denies, exit_code, args, duration)
        if lost or results.wrong_allows or proxied_denies:
            summary["gateway_log_tail"] = log.read_text(errors="replace")[-4000:]
        return summary


def summarize(results: Results, lost: list[str], proxied_denies: list[str | None], exit_code: int,
              args: argparse.Namespace, duration: float) -> dict[str, Any]:  # fmt: skip
    outcomes: Counter[str] = Counter()
    latencies: list[float] = []
    for bucket in results.buckets:
        outcomes.update(bucket.outcomes)
        latencies += bucket.latencies
    errors = sum(v for k, v in outcomes.items() if not k[0].isdigit())
    server_errors = sum(v for k, v in outcomes.items() if k.startswith("5"))
    rss = [b.rss_mb for b in results.buckets if b.rss_mb]
    by_fault = results.by_fault
    from load.measure.soak import slope_per_minute

    rss_series = [(b.start - results.started, b.rss_mb) for b in results.buckets if b.rss_mb]
    return {
        "command": "python -m tests.hostile.soak " + " ".join(sys.argv[1:]),
        "duration_s": duration, "workers": args.workers, "audit_mode": args.audit_mode, "rate_target": args.rate,
        "requests": results.requests, "outcomes": dict(outcomes),
        "error_rate": round(errors / max(1, results.requests), 4),  # connection errors, no answer
        "status_5xx_rate": round(server_errors / max(1, results.requests), 4),
        "unexpected": dict(results.unexpected), "wrong_allows": len(results.wrong_allows) + len(proxied_denies),
        "wrong_allow_cases": results.wrong_allows[:10] + [f"upstream received {d}" for d in proxied_denies[:10]],
        "decisions_seen": len(results.decision_ids), "records_lost": len(lost), "lost_ids": lost[:10],
        "faults_injected": results.faults, "outcomes_by_fault": {k: dict(v) for k, v in by_fault.items()},
        "latency_ms_allowed": {"p50": round(percentile(latencies, 0.5) * 1000, 2),
                               "p95": round(percentile(latencies, 0.95) * 1000, 2),
                               "p99": round(percentile(latencies, 0.99) * 1000, 2)},
        "rss_mb": {"first": round(rss[0], 1) if rss else 0, "last": round(rss[-1], 1) if rss else 0,
                   "max": round(max(rss), 1) if rss else 0,
                   "slope_mb_per_min": round(slope_per_minute(rss_series[len(rss_series) // 5:]), 2)},
        "gateway_exit_code": exit_code,
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.hostile.soak", description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=120.0, help="seconds of load (at most 600)")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rate", type=float, default=150.0, help="target requests per second, all clients")
    parser.add_argument("--fault-every", type=float, default=20.0, help="seconds per fault cycle (on, then off)")
    parser.add_argument("--audit-mode", choices=["async", "durable"], default="async")
    parser.add_argument("--out", help="write the summary as JSON here")
    args = parser.parse_args(argv)
    summary = run(args)
    text = json.dumps(summary, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    # uvicorn re-raises the SIGTERM it handled once shut down: -15 after "Finished server process" is clean.
    clean = summary["gateway_exit_code"] in (0, -signal.SIGTERM)
    ok = summary["records_lost"] == 0 and summary["wrong_allows"] == 0 and clean
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
