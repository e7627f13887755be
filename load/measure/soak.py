"""Soak mode: is one gateway worker's memory flat under a long run of the realistic mix?

wrk runs the mix for the whole duration in one go; RSS of the serving process is sampled every
``SAMPLE_EVERY_S`` seconds. The slope (least squares, MB per minute) is taken over the second half of
the run: bounded caches fill first (the audit writer's SQLite page cache alone is tens of MB and fills
as the store grows, within the first minute at a few thousand requests a second), and a leak shows as
growth that goes on. "Flat" means the fitted growth over that half is under ``FLAT_GROWTH_MB``.
Results: load/results/soak.md, soak.json and soak.png.
"""

from __future__ import annotations

import argparse
import json
import threading
from pathlib import Path
from typing import Any

from load.measure.plot import rss_plot
from load.measure.procs import serving_pids, tree_rss
from load.measure.stack import TARGETS

SAMPLE_EVERY_S = 5.0
FLAT_GROWTH_MB = 5.0


def slope_per_minute(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MB) samples, in MB per minute (0 for fewer than 2 samples)."""
    if len(samples) < 2:
        return 0.0
    n = len(samples)
    mean_t = sum(t for t, _ in samples) / n
    mean_v = sum(v for _, v in samples) / n
    var = sum((t - mean_t) ** 2 for t, _ in samples)
    if var == 0:
        return 0.0
    cov = sum((t - mean_t) * (v - mean_v) for t, v in samples)
    return cov / var * 60.0


def steady_part(samples: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The samples of the second half of the run."""
    if not samples:
        return []
    start = samples[-1][0] / 2
    return [s for s in samples if s[0] >= start]


def soak(args: argparse.Namespace, harness: Any, command: str) -> int:
    spec = next((t for t in TARGETS if t.name == args.profile_target), None)
    if spec is None or not spec.is_gateway:
        raise SystemExit(f"--profile-target must name a gateway configuration, not {args.profile_target!r}")
    service = harness.start(spec)
    duration = float(args.soak)
    samples: list[tuple[float, float]] = []
    stop = threading.Event()

    def sample() -> None:
        elapsed = 0.0
        while not stop.wait(SAMPLE_EVERY_S):
            elapsed += SAMPLE_EVERY_S
            rss = tree_rss(service.pid)
            workers = serving_pids(service.pid, spec.workers)
            samples.append((elapsed, max((rss.get(p, 0) for p in workers), default=0) / 2**20))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        result = harness.wrk(service, f"mix@{args.connections}", duration)
    finally:
        stop.set()
        sampler.join(SAMPLE_EVERY_S + 5)
    steady = steady_part(samples)
    slope = slope_per_minute(steady)
    span_min = (steady[-1][0] - steady[0][0]) / 60 if len(steady) > 1 else 0.0
    growth = slope * span_min
    flat = abs(growth) < FLAT_GROWTH_MB
    data = {
        "command": command,
        "target": spec.name,
        "duration_s": duration,
        "requests": result.requests,
        "rps": round(result.rps, 1),
        "non_2xx_share": round(result.non_2xx_share, 3),
        "socket_errors": result.socket_errors,
        "samples_mb": [[round(t, 1), round(v, 2)] for t, v in samples],
        "slope_mb_per_min": round(slope, 3),
        "fitted_growth_mb": round(growth, 2),
        "flat": flat,
    }
    out_dir: Path = args.results
    (out_dir / "soak.json").write_text(json.dumps(data, indent=2) + "\n")
    rss_plot(samples, out_dir / "soak.png", f"{spec.name}: RSS per worker under the mix ({duration:.0f} s)")
    first = samples[0][1] if samples else 0.0
    last = samples[-1][1] if samples else 0.0
    text = (
        f"# Soak: {spec.name}, realistic mix, {args.connections} connections, {duration:.0f} s\n\n"
        f"Command: `{command}`\n\n"
        f"- {result.requests:,} requests, {result.rps:,.0f} req/s, non-2xx {result.non_2xx_share:.0%}, "
        f"socket errors {result.socket_errors}\n"
        f"- RSS per worker: {first:.1f} MB at the first sample, {last:.1f} MB at the last "
        f"({len(samples)} samples, every {SAMPLE_EVERY_S:.0f} s)\n"
        f"- peak {max((v for _, v in samples), default=0.0):.1f} MB; slope over the second half: "
        f"{slope:+.3f} MB/min (fitted growth {growth:+.2f} MB): "
        f"{'flat' if flat else 'NOT flat'} (threshold {FLAT_GROWTH_MB:.0f} MB)\n"
    )
    (out_dir / "soak.md").write_text(text)
    print(text)
    return 0
