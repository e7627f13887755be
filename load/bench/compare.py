"""Compare a ``make bench`` run with the committed baseline: the regression guard of the hot path.

    python -m load.bench.compare RUN.json [--baseline load/bench/baseline.json] [--threshold 0.30]
    python -m load.bench.compare RUN.json --write-baseline      # after a deliberate change

Each benchmark's fastest round is divided by the same run's fastest calibration round
(``test_calibration``: plain CPython work), so the figure compared is "this step costs N calibration
units". Fastest, not median: on a shared machine the median of the calibration moved by 1.5x between
two runs minutes apart (other processes, frequency), its minimum by 0.3%; a step's minimum is its cost
when nothing interferes, which is what a change to the code moves. The ratio of that to
the baseline's says whether a step grew, independently of how fast this machine is today; a step whose
ratio exceeds ``1 + threshold`` is listed as grown. It prints and exits 0 (the machines are shared
and noisy: this is for a person to read, never a test); ``--strict`` exits 1 when a step grew.
Benchmarks missing from either side are listed, not compared.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BASELINE = Path(__file__).with_name("baseline.json")
CALIBRATION = "test_calibration"


@dataclass(frozen=True)
class Row:
    name: str
    baseline_us: float
    now_us: float
    ratio: float  # (now / now's calibration) / (baseline / baseline's calibration)


def fastest(run: dict[str, Any]) -> dict[str, float]:
    """Benchmark name -> fastest round in microseconds, from pytest-benchmark's ``--benchmark-json``
    file or from a baseline written by this tool."""
    if "fastest_us" in run:
        return {str(k): float(v) for k, v in run["fastest_us"].items()}
    return {str(bench["name"]): float(bench["stats"]["min"]) * 1e6 for bench in run.get("benchmarks", [])}


def compare(run: dict[str, float], baseline: dict[str, float]) -> tuple[list[Row], list[str], list[str]]:
    """Rows for the benchmarks in both, the names only in the run, the names only in the baseline."""
    if CALIBRATION not in run or CALIBRATION not in baseline:
        raise ValueError(f"both sides need the calibration benchmark {CALIBRATION!r}")
    scale = run[CALIBRATION] / baseline[CALIBRATION]
    rows = [
        Row(name, baseline[name], run[name], run[name] / baseline[name] / scale)
        for name in sorted(run.keys() & baseline.keys())
        if name != CALIBRATION and baseline[name] > 0
    ]
    return rows, sorted(run.keys() - baseline.keys()), sorted(baseline.keys() - run.keys())


def report(rows: list[Row], new: list[str], gone: list[str], threshold: float, scale: float) -> tuple[str, int]:
    lines = [
        f"machine speed vs baseline (calibration): {scale:.2f}x the baseline's time per unit of work",
        "",
        f"{'benchmark':<58} {'baseline':>11} {'now':>11} {'ratio':>7}",
    ]
    grown = 0
    for row in rows:
        flag = ""
        if row.ratio > 1 + threshold:
            flag, grown = "  GREW", grown + 1
        lines.append(f"{row.name:<58} {row.baseline_us:>9.2f}us {row.now_us:>9.2f}us {row.ratio:>6.2f}x{flag}")
    if new:
        lines.append(f"\nnot in the baseline (add with --write-baseline): {', '.join(new)}")
    if gone:
        lines.append(f"in the baseline but not run: {', '.join(gone)}")
    lines.append("")
    if grown:
        lines.append(f"{grown} step(s) grew by more than {threshold:.0%} against the baseline (machine speed removed)")
    else:
        lines.append(f"no step grew by more than {threshold:.0%} against the baseline (machine speed removed)")
    return "\n".join(lines), grown


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("run", type=Path, help="pytest-benchmark JSON (--benchmark-json)")
    parser.add_argument("--baseline", type=Path, default=BASELINE)
    parser.add_argument("--threshold", type=float, default=0.30)
    parser.add_argument("--strict", action="store_true", help="exit 1 when a step grew")
    parser.add_argument("--write-baseline", action="store_true", help="make this run the baseline")
    args = parser.parse_args(argv)
    try:
        run = fastest(json.loads(args.run.read_text()))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"compare: cannot read {args.run}: {exc}", file=sys.stderr)
        return 2
    if args.write_baseline:
        if CALIBRATION not in run:
            print(f"compare: {args.run} has no {CALIBRATION}; run the whole of load/bench", file=sys.stderr)
            return 2
        document = {
            "note": "fastest rounds of `make bench` in microseconds; rewrite with --write-baseline",
            "fastest_us": {k: round(v, 4) for k, v in sorted(run.items())},
        }
        args.baseline.write_text(json.dumps(document, indent=1) + "\n")
        print(f"baseline written: {args.baseline} ({len(run)} benchmarks)")
        return 0
    try:
        baseline = fastest(json.loads(args.baseline.read_text()))
        rows, new, gone = compare(run, baseline)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"compare: {exc}", file=sys.stderr)
        return 2
    text, grown = report(rows, new, gone, args.threshold, run[CALIBRATION] / baseline[CALIBRATION])
    print(text)
    return 1 if grown and args.strict else 0


if __name__ == "__main__":
    raise SystemExit(main())
