"""From wrk runs to figures: medians over rounds, ratios, the goal check, Markdown and JSON.

A run key is ``"<scenario>@<connections>"`` (``plain@32``, ``plain@1``, ``mix@32``). Each figure of
a target is the median over rounds of that figure (so p99 is the median of the rounds' p99s). Ratios
and added latencies compare targets measured in the same run only.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

from load.measure.wrk import WrkResult

HEADLINE = "plain@32"
ONE_CONNECTION = "plain@1"
MIX = "mix@32"
SHOWN_PERCENTILES = ("p50", "p90", "p99", "p99.9")
NOISY_FOREIGN_CPU = 0.10  # share of the proxy's CPU used by other processes that makes a run "noisy"

# Reference targets the ratios are taken against, and the target the goal is about.
DIRECT = "direct"
ENVOY = "envoy"
ENVOY_JWT = "envoy-jwt"
BARE = "bare"
GATEWAY = "gateway"
GATEWAY_DURABLE = "gateway-durable"
GATEWAY_2W = "gateway-2w"


@dataclass
class TargetResult:
    name: str
    description: str
    pinning: str
    workers: int = 1
    available: bool = True
    error: str | None = None
    runs: dict[str, list[WrkResult]] = field(default_factory=dict)
    rss_peak_per_worker: int = 0  # bytes
    rss_peak_total: int = 0  # bytes, the whole process tree
    # Per run key: (CPU used by the target's processes, CPU used by anything else on its CPU), in CPUs.
    cpu: dict[str, list[tuple[float, float]]] = field(default_factory=dict)

    def add(self, key: str, result: WrkResult, cpu: tuple[float, float] | None = None) -> None:
        self.runs.setdefault(key, []).append(result)
        if cpu is not None:
            self.cpu.setdefault(key, []).append(cpu)

    def cpu_median(self, key: str) -> tuple[float, float] | None:
        shares = self.cpu.get(key)
        if not shares:
            return None
        return statistics.median(s[0] for s in shares), statistics.median(s[1] for s in shares)

    def worst_foreign_cpu(self) -> float:
        return max((s[1] for shares in self.cpu.values() for s in shares), default=0.0)

    def median(self, key: str) -> dict[str, float] | None:
        results = self.runs.get(key)
        if not results:
            return None
        out = {"rps": statistics.median(r.rps for r in results)}
        for name in results[0].latency_us:
            out[name] = statistics.median(r.latency_us[name] for r in results)
        out["non_2xx_share"] = statistics.median(r.non_2xx_share for r in results)
        out["socket_errors"] = float(sum(r.socket_errors for r in results))
        out["rounds"] = float(len(results))
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "description": self.description,
            "pinning": self.pinning,
            "workers": self.workers,
            "available": self.available,
            "error": self.error,
            "rss_peak_per_worker_mb": round(self.rss_peak_per_worker / 2**20, 1),
            "rss_peak_total_mb": round(self.rss_peak_total / 2**20, 1),
            "runs": {
                key: {
                    "median": self.median(key),
                    "rounds": [r.to_json() for r in results],
                    "cpu_target_foreign": self.cpu.get(key, []),
                }
                for key, results in self.runs.items()
            },
        }


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def _figure(targets: dict[str, TargetResult], name: str, key: str, figure: str) -> float | None:
    target = targets.get(name)
    if target is None or not target.available:
        return None
    median = target.median(key)
    return None if median is None else median.get(figure)


def comparisons(targets: dict[str, TargetResult]) -> dict[str, dict[str, float | None]]:
    """Per target: ratios of req/s to the references and added latency at one connection."""
    out: dict[str, dict[str, float | None]] = {}
    for name in targets:
        rps = _figure(targets, name, HEADLINE, "rps")
        mix_rps = _figure(targets, name, MIX, "rps")
        p50_1 = _figure(targets, name, ONE_CONNECTION, "p50")
        p99_1 = _figure(targets, name, ONE_CONNECTION, "p99")
        direct_p50 = _figure(targets, DIRECT, ONE_CONNECTION, "p50")
        direct_p99 = _figure(targets, DIRECT, ONE_CONNECTION, "p99")
        out[name] = {
            "vs_direct": _ratio(rps, _figure(targets, DIRECT, HEADLINE, "rps")),
            "vs_envoy": _ratio(rps, _figure(targets, ENVOY, HEADLINE, "rps")),
            "vs_envoy_jwt": _ratio(rps, _figure(targets, ENVOY_JWT, HEADLINE, "rps")),
            "vs_bare": _ratio(rps, _figure(targets, BARE, HEADLINE, "rps")),
            "mix_vs_direct": _ratio(mix_rps, _figure(targets, DIRECT, MIX, "rps")),
            "mix_vs_bare": _ratio(mix_rps, _figure(targets, BARE, MIX, "rps")),
            "mix_vs_envoy_jwt": _ratio(mix_rps, _figure(targets, ENVOY_JWT, MIX, "rps")),
            "added_p50_1c_us": None if p50_1 is None or direct_p50 is None else p50_1 - direct_p50,
            "added_p99_1c_us": None if p99_1 is None or direct_p99 is None else p99_1 - direct_p99,
        }
    return out


@dataclass(frozen=True)
class GoalLine:
    goal: str
    measured: str
    met: bool | None  # None: not measured


def goal_check(targets: dict[str, TargetResult]) -> list[GoalLine]:
    """The issue's goal, line by line, on the headline scenario (cached token, allowed GET)."""
    lines: list[GoalLine] = []
    rps = _figure(targets, GATEWAY, HEADLINE, "rps")
    comp = comparisons(targets).get(GATEWAY, {})

    def line(goal: str, value: float | None, fmt: str, ok: bool | None) -> None:
        lines.append(GoalLine(goal, "not measured" if value is None else fmt.format(value), ok))

    line(
        ">= 10k req/s at 32 connections (1 worker, async audit)",
        rps,
        "{:,.0f} req/s",
        None if rps is None else rps >= 10_000,
    )
    vs_bare = comp.get("vs_bare")
    line(">= 0.75 x bare Python proxy", vs_bare, "{:.2f} x", None if vs_bare is None else vs_bare >= 0.75)
    vs_jwt = comp.get("vs_envoy_jwt")
    line(">= 0.5 x Envoy with jwt_authn", vs_jwt, "{:.2f} x", None if vs_jwt is None else vs_jwt >= 0.5)
    added_p50 = comp.get("added_p50_1c_us")
    line(
        "added median latency at 1 connection <= 150 us",
        added_p50,
        "{:+.0f} us",
        None if added_p50 is None else added_p50 <= 150,
    )
    added_p99 = comp.get("added_p99_1c_us")
    line(
        "added p99 at 1 connection <= 1 ms",
        added_p99,
        "{:+.0f} us",
        None if added_p99 is None else added_p99 <= 1000,
    )
    durable = _ratio(_figure(targets, GATEWAY_DURABLE, HEADLINE, "rps"), rps)
    durable_p50 = _figure(targets, GATEWAY_DURABLE, ONE_CONNECTION, "p50")
    gateway_p50 = _figure(targets, GATEWAY, ONE_CONNECTION, "p50")
    durable_text = None if durable is None else durable
    lines.append(
        GoalLine(
            "durable audit mode: cost stated",
            "not measured"
            if durable_text is None
            else f"{durable:.2f} x async req/s"
            + (
                ""
                if durable_p50 is None or gateway_p50 is None
                else f", {durable_p50 - gateway_p50:+.0f} us p50 at 1 connection"
            ),
            None if durable_text is None else True,
        )
    )
    two = _ratio(_figure(targets, GATEWAY_2W, HEADLINE, "rps"), rps)
    line("2 workers >= 1.6 x one", two, "{:.2f} x", None if two is None else two >= 1.6)
    return lines


def _us(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 10_000:
        return f"{value / 1000:.1f} ms"
    if value >= 1000:
        return f"{value / 1000:.2f} ms"
    return f"{value:.0f} us"


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _rps(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def markdown(targets: dict[str, TargetResult], meta: dict[str, Any], mix_check: list[dict[str, Any]]) -> str:
    comp = comparisons(targets)
    m: dict[str, float] | None
    out: list[str] = [f"# Load results ({meta.get('started', '')})", ""]
    out.append(f"Command: `{meta.get('command', '')}`  ")
    out.append(
        f"Method: wrk -t1, {meta.get('rounds')} round(s), {meta.get('duration_s')} s per 32-connection run, "
        f"{meta.get('duration_1c_s')} s per 1-connection run; figures are medians over rounds; targets "
        "interleaved round by round. " + str(meta.get("pinning", ""))
    )
    out.append("Drift between runs is about 30%: compare rows of this table only with each other.")
    noisy = {
        n: t.worst_foreign_cpu() for n, t in targets.items() if t.worst_foreign_cpu() > NOISY_FOREIGN_CPU
    }
    if noisy:
        worst = max(noisy.values())
        out.append(
            f"**Noisy run**: other processes took up to {worst:.0%} of the proxy's CPU during some runs "
            f"({', '.join(sorted(noisy))}); those figures are lower than on a quiet machine."
        )
    out.append("")
    out.append(f"## Headline: one allowed GET, cached token, {meta.get('connections', 32)} connections")
    out.append("")
    out.append(
        "| target | req/s | p50 | p90 | p99 | p99.9 | x direct | x Envoy | x Envoy+jwt | x bare "
        "| +p50 @1c | +p99 @1c | peak RSS/worker |"
    )
    out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, target in targets.items():
        if not target.available:
            out.append(f"| {name} | unavailable | | | | | | | | | | | |")
            continue
        m = target.median(HEADLINE) or {}
        c = comp[name]
        out.append(
            f"| {name} | {_rps(m.get('rps'))} | "
            + " | ".join(_us(m.get(p)) for p in SHOWN_PERCENTILES)
            + f" | {_x(c['vs_direct'])} | {_x(c['vs_envoy'])} | {_x(c['vs_envoy_jwt'])} | {_x(c['vs_bare'])}"
            f" | {_signed_us(c['added_p50_1c_us'])} | {_signed_us(c['added_p99_1c_us'])}"
            f" | {target.rss_peak_per_worker / 2**20:.0f} MB |"
        )
    out.append("")
    out.append(f"## Realistic mix, {meta.get('connections', 32)} connections")
    out.append("")
    out.append("| target | req/s | p50 | p90 | p99 | p99.9 | non-2xx | x direct | x bare | x Envoy+jwt |")
    out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, target in targets.items():
        m = target.median(MIX) if target.available else None
        if not m:
            continue
        c = comp[name]
        out.append(
            f"| {name} | {_rps(m.get('rps'))} | "
            + " | ".join(_us(m.get(p)) for p in SHOWN_PERCENTILES)
            + f" | {m.get('non_2xx_share', 0) * 100:.0f}% | {_x(c['mix_vs_direct'])} | {_x(c['mix_vs_bare'])}"
            f" | {_x(c['mix_vs_envoy_jwt'])} |"
        )
    out.append("")
    out.append("## One connection (latency of a lone client)")
    out.append("")
    out.append("| target | req/s | p50 | p90 | p99 | p99.9 | +p50 vs direct | +p99 vs direct |")
    out.append("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, target in targets.items():
        m = target.median(ONE_CONNECTION) if target.available else None
        if not m:
            continue
        c = comp[name]
        out.append(
            f"| {name} | {_rps(m.get('rps'))} | "
            + " | ".join(_us(m.get(p)) for p in SHOWN_PERCENTILES)
            + f" | {_signed_us(c['added_p50_1c_us'])} | {_signed_us(c['added_p99_1c_us'])} |"
        )
    goals = goal_check(targets)
    if any(g.met is not None for g in goals):
        out += [
            "",
            "## Goal (issue 7; a benchmark target, not a test assertion)",
            "",
            "| goal | measured | met |",
            "|---|---|---|",
        ]
        for g in goals:
            out.append(
                f"| {g.goal} | {g.measured} | {'-' if g.met is None else ('yes' if g.met else 'NO')} |"
            )
    if mix_check:
        out += ["", "## Mix check (one pass through each gateway before measuring)", ""]
        wrong = [c for c in mix_check if not c["ok"]]
        right = len(mix_check) - len(wrong)
        out.append(f"{right} of {len(mix_check)} requests answered as the reference role model says.")
        if wrong:
            out += ["", "| target | request | expected | got |", "|---|---|---|---|"]
            for c in wrong:
                out.append(f"| {c['target']} | {c['title']} | {c['expected']} | {c['got']} |")
    out += ["", "## Targets", ""]
    for name, target in targets.items():
        state = "" if target.available else f" **unavailable**: {(target.error or '')[:300]}"
        cpu = target.cpu_median(HEADLINE)
        used = (
            "" if cpu is None else f" CPU at 32 connections: {cpu[0]:.2f} of a core (others: {cpu[1]:.0%})."
        )
        out.append(f"- `{name}`: {target.description} Pinning: {target.pinning}.{used}{state}")
    return "\n".join(out) + "\n"


def short_error(text: str) -> str:
    """First and last lines of an error (a start-up failure's message and the log's last line)."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if len(lines) <= 1:
        return lines[0] if lines else ""
    return f"{lines[0]} ... {lines[-1]}"


def _signed_us(value: float | None) -> str:
    return "-" if value is None else f"{value:+.0f} us"


def to_json(
    targets: dict[str, TargetResult], meta: dict[str, Any], mix_check: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "meta": meta,
        "targets": {name: t.to_json() for name, t in targets.items()},
        "comparisons": comparisons(targets),
        "goal": [{"goal": g.goal, "measured": g.measured, "met": g.met} for g in goal_check(targets)],
        "mix_check": mix_check,
    }
