"""Running ``wrk`` with ``load/mix.lua`` and reading its result.

The figures come from the ``WRK_RESULT {json}`` line that mix.lua's ``done()`` prints (latency in
microseconds, p99.9 included), not from wrk's text table, whose units vary (us/ms/s). A run that
printed no such line is an error, not a zero.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

LOAD_DIR = Path(__file__).resolve().parent.parent
MIX_SCRIPT = LOAD_DIR / "mix.lua"
RESULT_PREFIX = "WRK_RESULT "
PERCENTILES = ("p50", "p75", "p90", "p99", "p99.9", "p99.99")


class WrkError(RuntimeError):
    pass


@dataclass(frozen=True)
class WrkResult:
    requests: int
    duration_s: float
    connections: int
    latency_us: dict[str, float]  # min, mean, max, stdev and PERCENTILES
    errors: dict[str, int]  # connect, read, write, status (non-2xx/3xx answers), timeout

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def socket_errors(self) -> int:
        return sum(v for k, v in self.errors.items() if k != "status")

    @property
    def non_2xx_share(self) -> float:
        return self.errors.get("status", 0) / self.requests if self.requests else 0.0

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["rps"] = round(self.rps, 1)
        return data


def parse_wrk_output(text: str, connections: int) -> WrkResult:
    """The result in wrk's output (mix.lua's ``WRK_RESULT`` line)."""
    for line in reversed(text.splitlines()):
        if line.startswith(RESULT_PREFIX):
            raw = json.loads(line[len(RESULT_PREFIX) :])
            return WrkResult(
                requests=int(raw["requests"]),
                duration_s=float(raw["duration_us"]) / 1e6,
                connections=connections,
                latency_us={k: float(v) for k, v in raw["latency_us"].items()},
                errors={k: int(v) for k, v in raw["errors"].items()},
            )
    tail = "\n".join(text.strip().splitlines()[-5:])
    raise WrkError(f"no {RESULT_PREFIX.strip()} line in wrk's output (is mix.lua's done() running?): {tail}")


def wrk_command(
    url: str,
    connections: int,
    duration_s: float,
    threads: int = 1,
    cpu: str | None = None,
    timeout_s: float = 2.0,
) -> list[str]:
    argv = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(duration_s))}s",
        f"--timeout={timeout_s:g}s",
        "-s",
        str(MIX_SCRIPT),
        url,
    ]
    return (["taskset", "-c", cpu] if cpu is not None else []) + argv


def run_wrk(
    url: str,
    requests_file: Path,
    connections: int,
    duration_s: float,
    threads: int = 1,
    cpu: str | None = None,
) -> WrkResult:
    """One wrk run; bounded by wrk's own -d plus a grace period."""
    threads = max(1, min(threads, connections))
    argv = wrk_command(url, connections, duration_s, threads, cpu)
    env = dict(os.environ, WRK_REQUESTS=str(requests_file))
    try:
        done = subprocess.run(
            argv,
            env=env,
            capture_output=True,
            text=True,
            timeout=duration_s + 30,
            check=False,
        )
    except FileNotFoundError as exc:
        raise WrkError(f"{argv[0]} not found: install wrk (apt-get install wrk)") from exc
    except subprocess.TimeoutExpired as exc:
        raise WrkError(f"wrk did not finish within {duration_s + 30:.0f}s") from exc
    if done.returncode != 0:
        raise WrkError(f"wrk exited {done.returncode}: {done.stderr.strip() or done.stdout.strip()}")
    return parse_wrk_output(done.stdout, connections)
