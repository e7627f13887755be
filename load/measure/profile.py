"""Profile mode: py-spy samples one gateway worker while wrk loads it.

py-spy records collapsed stacks (``--format raw``, aggregated by function with ``--function``,
``--nonblocking`` so sampling does not pause the worker). From them the harness writes:

- ``profile.collapsed.txt``: the stacks, which speedscope (https://www.speedscope.app) opens as is;
- ``profile.svg``: a flame graph drawn here (no external tool needed);
- ``profile.txt``: the top functions by self time and by total (inclusive) time, and the top files.

The worker runs pinned alone on its CPU; py-spy runs with wrk on the other one.
"""

from __future__ import annotations

import argparse
import html
import os
import shutil
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import psutil

from load.measure.procs import serving_pids
from load.measure.stack import TARGETS

SAMPLE_RATE_HZ = 200
TOP_N = 30


def py_spy_binary() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    if beside.is_file():
        return str(beside)
    return shutil.which("py-spy")


def parse_collapsed(text: str) -> list[tuple[list[str], int]]:
    stacks: list[tuple[list[str], int]] = []
    for line in text.splitlines():
        frames, _, count = line.rpartition(" ")
        if not frames or not count.isdigit():
            continue
        stacks.append((frames.split(";"), int(count)))
    return stacks


def _is_process_frame(frame: str) -> bool:
    # py-spy prefixes stacks with "process NNN:..." / "thread (0x...)" frames when asked; skip them.
    return frame.startswith(("process ", "thread "))


def summarize(stacks: list[tuple[list[str], int]], top_n: int = TOP_N) -> str:
    total = sum(count for _, count in stacks)
    if total == 0:
        return "no samples\n"
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    files: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    names = thread_names(stacks)
    for frames, count in stacks:
        threads[names.get(_thread_id(frames), "main thread")] += count
        frames = [f for f in frames if not _is_process_frame(f)]
        if not frames:
            continue
        self_time[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
        files[_file_of(frames[-1])] += count
    lines = [f"{total} samples at {SAMPLE_RATE_HZ} Hz", "", f"Top {top_n} by self time (where the CPU is):"]
    lines += [f"{c / total:6.1%}  {f}" for f, c in self_time.most_common(top_n)]
    lines += ["", f"Top {top_n} by total time (the function and what it calls):"]
    lines += [f"{c / total:6.1%}  {f}" for f, c in inclusive.most_common(top_n)]
    lines += ["", "Self time by file:"]
    lines += [f"{c / total:6.1%}  {f}" for f, c in files.most_common(top_n)]
    lines += ["", "Samples by thread (the event loop runs the requests; other threads share its CPU):"]
    lines += [f"{c / total:6.1%}  {t}" for t, c in threads.most_common(top_n)]
    return "\n".join(lines) + "\n"


# The request path's steps, each by the frames that open it (a pattern in parentheses, "(aiohttp/",
# stands for every frame of that file or package). A sample counts for the innermost step on
# its stack (walked from the leaf up), so the shares add up to the whole and nested steps (the signature
# inside the upstream headers, the token check inside admission) are not counted twice.
STEPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("read the request head (gateway/request.py)", ("parse_request_head (",)),
    ("authenticate (token cache)", ("Authenticator.authenticate (",)),
    ("map (route match)", ("Authorizer.match (",)),
    ("decide (authorize, decision memo)", ("Gateway.decide (",)),
    ("audit: build and queue the record", ("Gateway.audit_record (", "Gateway.audit_writable (")),
    ("X-Gateway-Assertion (Ed25519 JWS)", ("AssertionSigner.sign_request (",)),
    ("upstream headers", ("Gateway._upstream_headers (",)),
    ("upstream call and answer (aiohttp)", ("UpstreamClient.open (", "read_bounded (", "relay_body (", "(aiohttp/")),
    ("review and mask the answer", ("Authorizer.review_response (",)),
    ("answer the client (uvicorn send)", ("Exchange.respond (", "RequestResponseCycle.send (")),
    ("decision id and trace ids", ("Gateway.exchange (",)),
    ("request path, rest (gateway/app.py)", ("Gateway.",)),
    ("HTTP server (uvicorn, httptools, protocol limits)", ("GatewayHttpProtocol.", "(uvicorn/protocols/")),
)
# Every thread but the event loop's: the audit writer (rows, SQLite, commits), the span exporter.
OTHER_THREADS_STEP = "other threads: the audit writer (rows, SQLite, commits), exporters"
OTHER_STEP = "event loop and everything else"
# Leaves where a thread waits rather than works (``--nonblocking`` sampling cannot tell): left out of
# the step shares, which are shares of work. uvloop's own epoll wait cannot be told from its C work
# (both are ``Runner.run``), so it stays in the event loop's share.
WAITING_LEAVES = ("Condition.wait (threading.py", "Event.wait (threading.py", "_worker (concurrent/futures/thread.py")


def step_of(frames: list[str]) -> str:
    thread = _thread_id(frames)
    if thread and not thread.endswith(": MainThread"):
        return OTHER_THREADS_STEP
    for frame in reversed(frames):
        for name, patterns in STEPS:
            if any(frame.startswith(p) if p[0] != "(" else p in frame for p in patterns):
                return name
    return OTHER_STEP


def steps(stacks: list[tuple[list[str], int]], cpu_us_per_request: float | None = None) -> str:
    """Per step of the request path: its share of the samples and, with the process's CPU time per
    request measured over the same load, the CPU microseconds it costs per request."""
    total = sum(count for _, count in stacks)
    if total == 0:
        return "no samples\n"
    shares: Counter[str] = Counter()
    waiting = 0
    for frames, count in stacks:
        if frames and frames[-1].startswith(WAITING_LEAVES):
            waiting += count
            continue
        shares[step_of(frames)] += count
    working = total - waiting
    if working == 0:
        return "no samples of work\n"
    order = [name for name, _ in STEPS] + [OTHER_THREADS_STEP, OTHER_STEP]
    head = "| step | share of work |" + (" CPU us per request |" if cpu_us_per_request else "")
    lines = [head, "|---|---|" + ("---|" if cpu_us_per_request else "")]
    for name in order:
        share = shares[name] / working
        row = f"| {name} | {share:.1%} |"
        if cpu_us_per_request:
            row += f" {share * cpu_us_per_request:.0f} |"
        lines.append(row)
    if cpu_us_per_request:
        lines.append(f"| **whole process** | 100% | **{cpu_us_per_request:.0f}** |")
    lines.append(f"\n{waiting / total:.1%} of the samples were threads waiting, left out of the shares.")
    return "\n".join(lines) + "\n"


def _thread_id(frames: list[str]) -> str:
    return next((f for f in frames if f.startswith("thread ")), "")


def thread_names(stacks: list[tuple[list[str], int]]) -> dict[str, str]:
    """A name per py-spy thread frame: what a started thread runs (the frame under ``Thread.run``),
    or the event loop for the thread that never goes through ``Thread.run``."""
    names: dict[str, str] = {}
    for frames, _ in stacks:
        thread = _thread_id(frames)
        if not thread or thread in names:
            continue
        code = [f for f in frames if not _is_process_frame(f)]
        runs = [i for i, f in enumerate(code) if f.startswith("Thread.run ") or f.startswith("run (threading.py")]
        if runs and runs[0] + 1 < len(code):
            names[thread] = f"{thread}: {code[runs[0] + 1]}"
    for frames, _ in stacks:
        thread = _thread_id(frames)
        if thread and thread not in names:
            names[thread] = f"{thread}: event loop (main thread)"
    return names


def _cpu_seconds(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def _file_of(frame: str) -> str:
    # "name (path/to/file.py:12)" -> "path/to/file.py"
    inside = frame.rpartition(" (")[2].rstrip(")")
    return inside.rpartition(":")[0] or inside


def flame_svg(stacks: list[tuple[list[str], int]], title: str, width: int = 1400, row: int = 17) -> str:
    """A flame graph (root at the bottom) as a standalone SVG with hover titles."""
    tree: dict[str, Any] = {"count": 0, "children": {}}
    for frames, count in stacks:
        node = tree
        node["count"] += count
        for frame in frames:
            if _is_process_frame(frame):
                continue
            node = node["children"].setdefault(frame, {"count": 0, "children": {}})
            node["count"] += count
    total = tree["count"] or 1
    rects: list[str] = []
    depth_max = 0

    def walk(node: dict[str, Any], name: str, x: float, depth: int) -> None:
        nonlocal depth_max
        w = node["count"] / total * width
        if w < 0.5:
            return
        depth_max = max(depth_max, depth)
        if depth > 0:
            label = html.escape(name)
            share = node["count"] / total
            hue = 20 + sum(_file_of(name).encode()) % 40
            rects.append(
                f'<g><title>{label} ({share:.1%})</title><rect x="{x:.1f}" y="{{y{depth}}}" width="{w:.1f}" '
                f'height="{row - 1}" fill="hsl({hue},85%,60%)"/>'
                + (_label(x, depth, name, w) if w > 30 else "")
                + "</g>"
            )
        child_x = x
        for child_name, child in sorted(node["children"].items()):
            walk(child, child_name, child_x, depth + 1)
            child_x += child["count"] / total * width

    walk(tree, "all", 0.0, 0)
    height = (depth_max + 2) * row + 30
    body = "\n".join(rects)
    for depth in range(depth_max + 1, 0, -1):
        y = height - depth * row - 10
        body = body.replace(f"{{y{depth}}}", str(y)).replace(f"{{t{depth}}}", str(y + row - 5))
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="monospace">'
        '<rect width="100%" height="100%" fill="white"/>'
        f'<text x="5" y="18" font-size="14">{html.escape(title)}</text>'
        f"\n{body}\n</svg>\n"
    )


def _label(x: float, depth: int, name: str, width: float) -> str:
    text = html.escape(name[: int(width / 7)])
    return f'<text x="{x + 2:.1f}" y="{{t{depth}}}" font-size="11">{text}</text>'


def profile(args: argparse.Namespace, harness: Any, command: str) -> int:
    spy = py_spy_binary()
    if spy is None:
        raise SystemExit("py-spy is not installed (.venv/bin/pip install py-spy)")
    spec = next((t for t in TARGETS if t.name == args.profile_target), None)
    if spec is None or spec.kind not in ("gateway", "bare"):
        raise SystemExit(f"--profile-target: a Python target (gateway*, bare), not {args.profile_target!r}")
    service = harness.start(spec)
    worker = serving_pids(service.pid, spec.workers)[0]
    scenario = f"{args.profile_scenario}@{args.connections}"
    harness.wrk(service, scenario, 2.0)  # warm-up: caches and pools filled before sampling
    out_dir: Path = args.results
    collapsed = out_dir / "profile.collapsed.txt"
    duration = max(1, round(float(args.profile)))
    argv = [
        spy,
        "record",
        "--pid",
        str(worker),
        "--duration",
        str(duration),
        "--rate",
        str(SAMPLE_RATE_HZ),
        "--format",
        "raw",
        "--function",
        "--threads",
        "--nonblocking",
        "--output",
        str(collapsed),
    ]
    if harness.pinning.load_cpu is not None:
        argv = ["taskset", "-c", harness.pinning.load_cpu, *argv]
    outcome: dict[str, Any] = {}

    def load() -> None:
        before = _cpu_seconds(worker)
        outcome["wrk"] = harness.wrk(service, scenario, duration + 2)
        outcome["cpu_s"] = _cpu_seconds(worker) - before

    loader = threading.Thread(target=load, daemon=True)
    loader.start()
    spied = subprocess.run(
        argv, capture_output=True, text=True, timeout=duration + 60, check=False, env=dict(os.environ)
    )
    loader.join(duration + 40)
    if spied.returncode != 0 or not collapsed.is_file():
        print(f"py-spy failed ({spied.returncode}): {spied.stderr.strip()}", file=sys.stderr)
        return 1
    stacks = parse_collapsed(collapsed.read_text())
    title = f"{spec.name} under {scenario} for {duration} s"
    wrk_result = outcome.get("wrk")
    header = f"# Profile: {title}\n# Command: {command}\n"
    if wrk_result is not None:
        header += f"# Load while sampling: {wrk_result.rps:,.0f} req/s (sampling slows the worker a little)\n"
    cpu_per_request = None
    if wrk_result is not None and wrk_result.requests:
        cpu_per_request = outcome["cpu_s"] * 1e6 / wrk_result.requests
        header += f"# CPU per request over that load: {cpu_per_request:.0f} us (all threads of the worker)\n"
    breakdown = "\nSteps of the request path (a sample counts for the innermost step on its stack):\n\n"
    summary = header + "\n" + summarize(stacks) + breakdown + steps(stacks, cpu_per_request)
    (out_dir / "profile.txt").write_text(summary)
    (out_dir / "profile.svg").write_text(flame_svg(stacks, title))
    print(summary)
    print(
        f"written: {out_dir / 'profile.txt'}, profile.svg, profile.collapsed.txt (open in speedscope)",
        file=sys.stderr,
    )
    return 0
