"""The load harness (``make load`` -> load/run.sh -> ``python -m load.harness``).

Starts everything on loopback (fast upstream, reference services, dev IdP, Envoy, the bare proxy and
the gateway in its configurations), mints tokens once, checks the mix against each gateway, then runs
wrk round by round, every target in turn in each round, and reports medians: Markdown on stdout and in
load/results/latest.md, JSON in latest.json, the percentile plot in latency.png.

Modes: the default comparison; ``--soak SECONDS`` (RSS of one gateway worker under the mix, sampled
every few seconds, with its slope); ``--profile SECONDS`` (py-spy on one gateway worker under load).
Every run is bounded: wrk's -d, a timeout on every wait, and all processes stopped on the way out.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from gateway.demo.tenants import TENANTS
from load.measure import report
from load.measure.check import check_mix
from load.measure.mix import Mix, WireRequest, plain_request, realistic_mix, wire_requests, write_lua_requests
from load.measure.plot import latency_plot
from load.measure.procs import (
    CpuSample,
    CpuWatch,
    RssSampler,
    Service,
    ServiceError,
    parse_cpus,
    pin_tree,
)
from load.measure.stack import Pinning, Stack, TargetSpec, select_targets
from load.measure.tokens import AUDIENCES, TokenBook, fetch_jwks, issuers
from load.measure.wrk import WrkError, WrkResult, run_wrk

LOAD_DIR = Path(__file__).resolve().parent
RESULTS_DIR = LOAD_DIR / "results"
WARMUP_S = 1.0
RETRY_FOREIGN_CPU = 0.25  # redo a run when other processes took more than this share of the proxy's CPU


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="load/run.sh", description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument(
        "--quick", action="store_true", help="fewer targets (direct, envoy-jwt, bare, gateway), 1 round"
    )
    parser.add_argument(
        "--duration", type=float, default=None, help="seconds per 32-connection run (default 5, quick 3)"
    )
    parser.add_argument("--duration-1c", type=float, default=None, help="seconds per 1-connection run (default 2)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds (default 3, quick 1); figures are medians")
    parser.add_argument("--only", metavar="NAME[,NAME]", help="only these targets (see README for names)")
    parser.add_argument("--connections", type=int, default=32, help="connections of the loaded runs (default 32)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    parser.add_argument(
        "--retry-noisy",
        type=int,
        default=1,
        metavar="N",
        help="redo a run up to N times when other processes took >25%% of the proxy's CPU (default 1)",
    )
    parser.add_argument("--results", type=Path, default=RESULTS_DIR, help="output directory (default load/results)")
    parser.add_argument("--soak", type=float, metavar="SECONDS", help="soak mode: RSS of one gateway worker over time")
    parser.add_argument(
        "--profile", type=float, metavar="SECONDS", help="profile mode: py-spy on one worker of --profile-target"
    )
    parser.add_argument("--profile-scenario", choices=("mix", "plain"), default="mix")
    parser.add_argument(
        "--profile-target", default="gateway", help="the target to profile (gateway*, bare) or soak (gateway*)"
    )
    args = parser.parse_args(argv)
    args.rounds = args.rounds if args.rounds is not None else (1 if args.quick else 3)
    args.duration = args.duration if args.duration is not None else (3.0 if args.quick else 5.0)
    args.duration_1c = args.duration_1c if args.duration_1c is not None else 2.0
    for name in ("rounds", "duration", "duration_1c", "connections"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive")
    return args


class Harness:
    """Everything the modes share: the stack, the tokens and the request files."""

    def __init__(self, args: argparse.Namespace, work_dir: Path) -> None:
        self.args = args
        self.work_dir = work_dir
        self.pinning = Pinning.detect(not args.no_pin)
        self.stack = Stack(work_dir, args.results / "logs", self.pinning)
        self.requests: dict[str, list[WireRequest]] = {}
        self.request_files: dict[str, Path] = {}
        self.jwks_file = work_dir / "jwks.json"
        self.issuers: list[str] = []

    def prepare(self) -> None:
        self.stack.start_shared()
        book = TokenBook(self.stack.dev_dir, self.stack.authority)
        mixes: list[Mix] = [plain_request(), realistic_mix()]
        for mix in mixes:
            wire = wire_requests(mix, book)
            self.requests[mix.name] = wire
            self.request_files[mix.name] = write_lua_requests(wire, self.work_dir / f"{mix.name}-requests.lua")
        self.jwks_file.write_text(json.dumps(fetch_jwks(self.stack.authority, TENANTS[0])))
        self.issuers = issuers(self.stack.authority, TENANTS)

    def start(self, spec: TargetSpec) -> Service:
        return self.stack.start_target(spec, self.issuers, AUDIENCES, self.jwks_file)

    def wrk(self, service: Service, scenario_key: str, duration_s: float) -> WrkResult:
        scenario, _, rest = scenario_key.partition("@")
        connections = int(rest.partition("/")[0])
        return run_wrk(service.url, self.request_files[scenario], connections, duration_s, cpu=self.pinning.load_cpu)

    def close(self) -> None:
        self.stack.close()


def scenario_keys(spec: TargetSpec, connections: int) -> list[str]:
    return [k.replace("@32", f"@{connections}") for k in spec.scenarios]


def _is_one_connection(key: str) -> bool:
    return key.partition("@")[2].partition("/")[0] == "1"


def compare(args: argparse.Namespace, harness: Harness, command: str) -> int:
    specs = select_targets(args.only, args.quick)
    results: dict[str, report.TargetResult] = {}
    services: dict[str, Service] = {}
    mix_check: list[dict[str, Any]] = []
    for spec in specs:
        result = report.TargetResult(spec.name, spec.description, _pin_text(harness.pinning, spec), spec.workers)
        results[spec.name] = result
        try:
            services[spec.name] = harness.start(spec)
        except ServiceError as exc:
            result.available, result.error = False, report.short_error(str(exc))
            _say(f"{spec.name}: unavailable: {result.error}")
            continue
        if spec.is_gateway:
            mix_check += check_mix(spec.name, services[spec.name].url, harness.requests["mix"])

    runnable = [s for s in specs if s.name in services]
    per_round = sum(
        (args.duration_1c if _is_one_connection(k) else args.duration) + 0.3
        for s in runnable
        for k in scenario_keys(s, args.connections)
    )
    expected_s = per_round * args.rounds + 2 * len(runnable)
    _say(f"{len(runnable)} target(s), {args.rounds} round(s), about {expected_s:.0f} s of load")
    for spec in runnable:  # warm-up: caches, connection pools, JIT-free but page-faulted
        for scenario in ("plain", "mix"):
            if any(k.startswith(scenario) for k in spec.scenarios):
                _try_wrk(harness, services[spec.name], f"{scenario}@{args.connections}", WARMUP_S)

    for round_number in range(1, args.rounds + 1):
        for spec in runnable:
            service = services[spec.name]
            result = results[spec.name]
            if not service.alive():
                result.available = False
                result.error = report.short_error(f"exited during the run:\n{service.log_tail()}")
                continue
            with RssSampler(service.pid, workers=spec.workers) as sampler:
                for key in scenario_keys(spec, args.connections):
                    duration = args.duration_1c if _is_one_connection(key) else args.duration
                    measured = _measure(harness, service, spec, key, duration, args.retry_noisy)
                    if measured is None:
                        continue
                    outcome, cpu = measured
                    result.add(key.replace(f"@{args.connections}", "@32"), outcome, cpu)
                    _say(
                        f"round {round_number} {spec.name:16s} {key:9s} {outcome.rps:9,.0f} req/s  "
                        f"p50 {outcome.latency_us['p50']:7.0f} us  p99 {outcome.latency_us['p99']:7.0f} us  "
                        f"CPU {cpu.per_request_us(outcome.requests)[0]:5.0f} us/req"
                        + (f"  (others on its CPU {cpu.foreign_share:.0%})" if cpu.foreign_share > 0.05 else "")
                        + (f"  non-2xx {outcome.non_2xx_share:.0%}" if outcome.errors.get("status") else "")
                        + (f"  socket errors {outcome.socket_errors}" if outcome.socket_errors else "")
                    )
            result.rss_peak_per_worker = max(result.rss_peak_per_worker, sampler.peak_per_worker())
            result.rss_peak_total = max(result.rss_peak_total, _tree_total(sampler))

    meta = _meta(args, harness, command)
    write_outputs(args.results, results, meta, mix_check)
    return 0


def write_outputs(
    results_dir: Path,
    results: dict[str, report.TargetResult],
    meta: dict[str, Any],
    mix_check: list[dict[str, Any]],
) -> None:
    results_dir.mkdir(parents=True, exist_ok=True)
    text = report.markdown(results, meta, mix_check)
    (results_dir / "latest.md").write_text(text)
    (results_dir / "latest.json").write_text(json.dumps(report.to_json(results, meta, mix_check), indent=2) + "\n")
    latency_plot(results, results_dir / "latency.png", title=f"latency percentiles ({meta.get('started', '')})")
    print(text)
    print(f"written: {results_dir / 'latest.md'}, latest.json, latency.png", file=sys.stderr)


def _measure(
    harness: Harness, service: Service, spec: TargetSpec, key: str, duration_s: float, retries: int
) -> tuple[WrkResult, CpuSample] | None:
    """One run; redone (at most ``retries`` times) while other processes took a large share of the
    proxy's CPU, keeping the quietest attempt."""
    best: tuple[WrkResult, CpuSample] | None = None
    same_cpu = key.endswith("/same-cpu") and harness.pinning.load_cpu is not None
    own_cpu = None if same_cpu else _own_cpu(harness.pinning, spec)
    for attempt in range(retries + 1):
        if same_cpu:
            pin_tree(service.pid, parse_cpus(str(harness.pinning.load_cpu)))
        try:
            with CpuWatch(service.pid, own_cpu) as watch:
                outcome = _try_wrk(harness, service, key, duration_s)
        finally:
            if same_cpu:
                pin_tree(service.pid, parse_cpus(_target_cpus(harness.pinning, spec)))
        if outcome is None:
            return best
        sample = watch.sample
        if best is None or sample.foreign_share < best[1].foreign_share:
            best = (outcome, sample)
        if sample.foreign_share <= RETRY_FOREIGN_CPU:
            break
        if attempt < retries:
            _say(f"{spec.name} {key}: other processes took {sample.foreign_share:.0%} of its CPU; once more")
    return best


def _try_wrk(harness: Harness, service: Service, key: str, duration_s: float) -> WrkResult | None:
    try:
        return harness.wrk(service, key, duration_s)
    except WrkError as exc:
        _say(f"{service.name} {key}: wrk failed: {exc}")
        return None


def _tree_total(sampler: RssSampler) -> int:
    return max((sum(sample.values()) for _, sample in sampler.samples), default=0)


def _target_cpus(pinning: Pinning, spec: TargetSpec) -> str:
    """The CPU list a target normally runs on (what the same-cpu runs restore)."""
    if spec.workers > 1:
        return str(pinning.all_cpus)
    return str(pinning.proxy_cpu)


def _own_cpu(pinning: Pinning, spec: TargetSpec) -> int | None:
    """The CPU the target has to itself, if it has one (watched for other processes' load)."""
    if pinning.proxy_cpu is None or spec.workers > 1 or spec.kind in ("direct", "reference"):
        return None
    return int(pinning.proxy_cpu)


def _pin_text(pinning: Pinning, spec: TargetSpec) -> str:
    if pinning.load_cpu is None:
        return "none"
    if spec.kind in ("direct", "reference"):
        return f"CPU {pinning.load_cpu}, shared with wrk"
    if spec.workers > 1:
        return f"CPUs {pinning.all_cpus} (shares CPU {pinning.load_cpu} with wrk and the upstream)"
    return f"CPU {pinning.proxy_cpu} alone"


def _meta(args: argparse.Namespace, harness: Harness, command: str) -> dict[str, Any]:
    return {
        "started": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": command,
        "rounds": args.rounds,
        "duration_s": args.duration,
        "duration_1c_s": args.duration_1c,
        "connections": args.connections,
        "pinning": harness.pinning.describe(),
        "wrk": _version(["wrk", "-v"]),
        "envoy": _envoy_version(),
        "python": sys.version.split()[0],
        "mix": [
            {"title": e.title, "weight": e.weight, "expect": e.expect, "masked": e.masked}
            for e in realistic_mix().entries
        ],
    }


def _version(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return (done.stdout or done.stderr).strip().splitlines()[0] if (done.stdout or done.stderr).strip() else "unknown"


def _envoy_version() -> str:
    from load.measure.envoy import envoy_binary

    binary = envoy_binary()
    return "not installed" if binary is None else _version([binary, "--version"]).split("version:")[-1].strip()


def _say(text: str) -> None:
    print(f"[load {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        print("load: wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2
    command = "load/run.sh " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    args.results.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="gateway-load-") as tmp:
        harness = Harness(args, Path(tmp))
        try:
            harness.prepare()
            if args.soak is not None:
                from load.measure.soak import soak

                return soak(args, harness, command)
            if args.profile is not None:
                from load.measure.profile import profile

                return profile(args, harness, command)
            return compare(args, harness, command)
        except ServiceError as exc:
            print(f"load: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            return 130
        finally:
            harness.close()


if __name__ == "__main__":
    sys.exit(main())
