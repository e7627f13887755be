"""The latency-percentile plot: one line per target, percentiles on a "nines" axis, latency on a log axis.

Four panels: the headline scenario at 32 connections, the realistic mix at 32 connections, and one
connection with the proxy on its own CPU and on wrk's. Matplotlib with the Agg backend (no display needed).
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from load.measure.report import HEADLINE, MIX, ONE_CONNECTION, ONE_CONNECTION_SAME_CPU, TargetResult

PLOTTED = (("p50", 50.0), ("p75", 75.0), ("p90", 90.0), ("p99", 99.0), ("p99.9", 99.9), ("p99.99", 99.99))
PANELS = (
    (HEADLINE, "one allowed GET, 32 connections"),
    (MIX, "realistic mix, 32 connections"),
    (ONE_CONNECTION, "one allowed GET, 1 connection"),
    (ONE_CONNECTION_SAME_CPU, "1 connection, proxy on wrk's CPU"),
)


def _nines(percentile: float) -> float:
    return -math.log10(1 - percentile / 100)


def latency_plot(targets: dict[str, TargetResult], path: Path, title: str = "") -> Path:
    figure, axes = plt.subplots(2, 2, figsize=(13, 10), sharey=False)
    ticks = [_nines(p) for _, p in PLOTTED]
    # One colour per target in every panel, even where a target has no line.
    colours = {name: f"C{index % 10}" for index, name in enumerate(targets)}
    for axis, (key, label) in zip(axes.flat, PANELS, strict=True):
        drawn = 0
        for name, target in targets.items():
            median = target.median(key) if target.available else None
            if not median:
                continue
            points = [(x, median[k] / 1000) for (k, _), x in zip(PLOTTED, ticks, strict=True) if median.get(k, 0) > 0]
            if not points:
                continue
            axis.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=name, color=colours[name])
            drawn += 1
        axis.set_title(label)
        axis.set_xticks(ticks)
        axis.set_xticklabels([k for k, _ in PLOTTED])
        axis.set_xlabel("percentile")
        axis.set_ylabel("latency (ms, log scale)")
        axis.set_yscale("log")
        axis.grid(True, which="both", alpha=0.3)
        if drawn:
            axis.legend(fontsize="small")
        else:
            axis.text(0.5, 0.5, "not measured", ha="center", va="center", transform=axis.transAxes)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def rss_plot(samples: list[tuple[float, float]], path: Path, title: str) -> Path:
    """RSS (MB) over time (s), for the soak run."""
    figure, axis = plt.subplots(figsize=(8, 4))
    axis.plot([s[0] for s in samples], [s[1] for s in samples], marker=".")
    axis.set_xlabel("seconds under load")
    axis.set_ylabel("RSS per worker (MB)")
    axis.set_title(title)
    axis.grid(True, alpha=0.3)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
