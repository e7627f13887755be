"""Processes the harness starts: on loopback, on free ports, pinned to a CPU, always stopped.

Every wait is bounded. ``stop`` sends SIGTERM to the process group, waits, then SIGKILL, so that
worker processes (uvicorn ``--workers``) go with their parent. Output goes to a log file per
process, shown when a start-up fails.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil  # type: ignore[import-untyped]

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_count() -> int:
    return len(os.sched_getaffinity(0))


class ServiceError(RuntimeError):
    pass


class Service:
    """One process started by the harness, ready once ``ready_url`` answers 200 (or its port accepts)."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        port: int,
        log_dir: Path,
        ready_url: str | None = None,
        cpu: str | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.port = port
        self.ready_url = ready_url
        self.cpu = cpu
        self.env = env
        self.log_path = log_dir / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        if self.process is None:
            raise ServiceError(f"{self.name} is not running")
        return self.process.pid

    def start(self, timeout_s: float = START_TIMEOUT_S) -> Service:
        argv = (["taskset", "-c", self.cpu] if self.cpu is not None else []) + self.argv
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
            )
        try:
            self._wait_ready(timeout_s)
        except ServiceError:
            self.stop()
            raise
        return self

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise ServiceError(f"{self.name} exited with {self.process.returncode} at start-up:\n{self.log_tail()}")
            if self._answers():
                return
            time.sleep(0.1)
        raise ServiceError(f"{self.name} not ready after {timeout_s:.0f}s:\n{self.log_tail()}")

    def _answers(self) -> bool:
        if self.ready_url is None:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5),
            ):
                return True
            return False
        try:
            with urllib.request.urlopen(self.ready_url, timeout=1.0) as response:
                return int(response.status) == 200
        except (urllib.error.URLError, OSError):
            return False

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)


def tree_rss(pid: int) -> dict[int, int]:
    """RSS in bytes of a process and each of its descendants, by pid (those still alive)."""
    out: dict[int, int] = {}
    try:
        root = psutil.Process(pid)
        for process in [root, *root.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                out[process.pid] = int(process.memory_info().rss)
    except psutil.Error:
        pass
    return out


def serving_pids(pid: int, workers: int = 1) -> list[int]:
    """The processes that serve requests: the process itself with one worker, else its worker children."""
    if workers <= 1:
        return [pid]
    with contextlib.suppress(psutil.Error):
        children = psutil.Process(pid).children(recursive=False)
        found = [c.pid for c in children if _is_worker(c)]
        if found:
            return found
    return [pid]


def _is_worker(process: psutil.Process) -> bool:
    # uvicorn's supervisor may also start a multiprocessing resource tracker: it serves nothing.
    with contextlib.suppress(psutil.Error):
        return "resource_tracker" not in " ".join(process.cmdline())
    return False


class RssSampler:
    """Samples the RSS of a process tree every ``interval_s`` in a thread; keeps the peak per pid."""

    def __init__(self, pid: int, interval_s: float = 0.5, workers: int = 1) -> None:
        self.pid = pid
        self.workers = workers
        self.interval_s = interval_s
        self.peak: dict[int, int] = {}
        self.samples: list[tuple[float, dict[int, int]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        started = time.monotonic()
        while not self._stop.is_set():
            sample = tree_rss(self.pid)
            self.samples.append((time.monotonic() - started, sample))
            for pid, rss in sample.items():
                if rss > self.peak.get(pid, 0):
                    self.peak[pid] = rss
            self._stop.wait(self.interval_s)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def peak_per_worker(self) -> int:
        """The largest peak RSS among the serving processes (the workers, or the process itself)."""
        workers = serving_pids(self.pid, self.workers)
        return max((self.peak.get(p, 0) for p in workers), default=0)


def pin_tree(pid: int, cpus: set[int]) -> None:
    """Move every thread of a process tree to ``cpus`` (threads started later inherit it)."""
    with contextlib.suppress(psutil.Error):
        root = psutil.Process(pid)
        for process in [root, *root.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                for thread in process.threads():
                    with contextlib.suppress(OSError):
                        os.sched_setaffinity(thread.id, cpus)


def parse_cpus(text: str) -> set[int]:
    """``"0,1"`` -> {0, 1} (the taskset -c lists the harness writes)."""
    return {int(part) for part in text.split(",") if part.strip()}


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its descendants so far."""
    total = 0.0
    with contextlib.suppress(psutil.Error):
        root = psutil.Process(pid)
        for process in [root, *root.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                times = process.cpu_times()
                total += times.user + times.system
    return total


@dataclass(frozen=True)
class CpuSample:
    """CPU use during one run. Shares are in CPUs (1.0 = one core busy for the whole run)."""

    target_share: float  # the target's process tree
    foreign_share: float  # anything else on the target's own CPU (pinned targets only; else 0)
    target_cpu_s: float  # CPU seconds of the target's tree
    main_thread_cpu_s: float  # of the root process's main thread (the event loop for Python targets)
    other_threads_cpu_s: float  # of the root process's other threads (e.g. the audit writer)

    def per_request_us(self, requests: int) -> tuple[float, float, float]:
        """(tree, main thread, other threads) CPU microseconds per request."""
        if requests <= 0:
            return (0.0, 0.0, 0.0)
        scale = 1e6 / requests
        return (self.target_cpu_s * scale, self.main_thread_cpu_s * scale, self.other_threads_cpu_s * scale)


def _thread_cpu(pid: int) -> dict[int, float]:
    with contextlib.suppress(psutil.Error):
        return {t.id: t.user_time + t.system_time for t in psutil.Process(pid).threads()}
    return {}


class CpuWatch:
    """How busy one CPU was during a run, and how much of that was the target's own process tree.

    The difference is other work on the machine landing on the CPU meant for the proxy alone: the
    main source of drift on a shared machine, reported so a reader can tell a quiet run from a noisy one.
    CPU time per request, unlike req/s, hardly moves when other processes take CPU away: it is the
    steadier figure for comparing Python targets on a shared machine.
    """

    def __init__(self, pid: int, cpu: int | None) -> None:
        self.pid = pid
        self.cpu = cpu
        self.sample = CpuSample(0.0, 0.0, 0.0, 0.0, 0.0)

    @staticmethod
    def _busy(cpu: int) -> tuple[float, float]:
        times = psutil.cpu_times(percpu=True)[cpu]
        idle = times.idle + getattr(times, "iowait", 0.0)
        total = sum(times)
        return total - idle, total

    def __enter__(self) -> CpuWatch:
        self._start = time.monotonic()
        self._target = tree_cpu_seconds(self.pid)
        self._threads = _thread_cpu(self.pid)
        self._cpu = self._busy(self.cpu) if self.cpu is not None else (0.0, 0.0)
        return self

    def __exit__(self, *exc: object) -> None:
        elapsed = time.monotonic() - self._start
        if elapsed <= 0:
            return
        target_s = tree_cpu_seconds(self.pid) - self._target
        threads = _thread_cpu(self.pid)
        deltas = {tid: spent - self._threads.get(tid, 0.0) for tid, spent in threads.items()}
        main = deltas.pop(self.pid, 0.0)  # on Linux the main thread's id is the process id
        busy_share = 0.0
        if self.cpu is not None:
            busy, total = self._busy(self.cpu)
            spent = total - self._cpu[1]
            busy_share = (busy - self._cpu[0]) / spent if spent > 0 else 0.0
        target_share = target_s / elapsed
        foreign = max(0.0, busy_share - target_share) if self.cpu is not None else 0.0
        self.sample = CpuSample(target_share, foreign, target_s, main, sum(deltas.values()))
