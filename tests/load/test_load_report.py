"""The harness's arithmetic and outputs, on a recorded wrk output and hand-made results."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from load.measure import report
from load.measure.plot import latency_plot, rss_plot
from load.measure.procs import CpuSample
from load.measure.wrk import WrkError, WrkResult, parse_wrk_output

DATA = Path(__file__).parent / "data"


def result(rps: float, p50: float, p99: float, status: int = 0, seconds: float = 5.0) -> WrkResult:
    latency = {
        "min": p50 / 2,
        "mean": p50,
        "max": p99 * 3,
        "stdev": 1.0,
        "p50": p50,
        "p75": p50 * 1.2,
        "p90": p50 * 1.5,
        "p99": p99,
        "p99.9": p99 * 2,
        "p99.99": p99 * 2.5,
    }
    errors = {"connect": 0, "read": 0, "write": 0, "status": status, "timeout": 0}
    return WrkResult(int(rps * seconds), seconds, 32, latency, errors)


def test_parses_the_done_hook_line_of_a_recorded_run() -> None:
    parsed = parse_wrk_output((DATA / "wrk-mix-output.txt").read_text(), connections=4)
    assert parsed.requests == 65147
    assert parsed.duration_s == pytest.approx(1.000277)
    assert parsed.rps == pytest.approx(65147 / 1.000277)
    assert parsed.latency_us["p50"] == 49
    assert parsed.latency_us["p99"] == 408
    assert parsed.latency_us["p99.9"] == 2068
    assert parsed.socket_errors == 0
    assert parsed.non_2xx_share == 0


def test_output_without_the_result_line_is_an_error_not_a_zero() -> None:
    text = (DATA / "wrk-mix-output.txt").read_text()
    stripped = "\n".join(line for line in text.splitlines() if not line.startswith("WRK_RESULT"))
    with pytest.raises(WrkError, match="WRK_RESULT"):
        parse_wrk_output(stripped, connections=4)


def test_counts_non_2xx_and_socket_errors_apart() -> None:
    r = WrkResult(1000, 1.0, 32, {"p50": 1.0}, {"connect": 1, "read": 2, "write": 0, "status": 250, "timeout": 3})
    assert r.socket_errors == 6
    assert r.non_2xx_share == 0.25


def targets() -> dict[str, report.TargetResult]:
    figures = {  # name: (rps plain@32, p50 plain@1, p99 plain@1)
        "direct": (60_000, 20, 300),
        "envoy": (30_000, 80, 400),
        "envoy-jwt": (18_000, 90, 450),
        "bare": (12_000, 100, 500),
        "gateway": (10_000, 150, 900),
        "gateway-durable": (8_000, 200, 1100),
        "gateway-2w": (17_000, 150, 900),
    }
    out: dict[str, report.TargetResult] = {}
    for name, (rps, p50_1, p99_1) in figures.items():
        workers = 2 if name == "gateway-2w" else 1
        target = report.TargetResult(name, f"{name} description", "CPU 1 alone", workers)
        # Three rounds: the median is the middle one, whatever the order.
        cpu_us = 1e6 / rps  # one core saturated: CPU per request is the inverse of the rate
        for factor in (1.2, 1.0, 0.5):
            headline = result(rps * factor, 1000 / factor, 5000 / factor)
            spent = headline.requests * cpu_us / 1e6
            target.add(
                report.HEADLINE,
                headline,
                CpuSample(1.0, 0.3 * (factor == 0.5), spent, spent * 0.8, spent * 0.2),
            )
            target.add(report.ONE_CONNECTION, result(1e6 / p50_1, p50_1 * factor, p99_1 * factor))
            target.add(report.MIX, result(rps * 0.8 * factor, 1200, 6000, status=int(rps * 0.3)))
        target.rss_peak_per_worker = 50 * 2**20
        out[name] = target
    unavailable = report.TargetResult(
        "gateway-ref",
        "broken",
        "CPU 1 alone",
        available=False,
        error="gateway exited with 1 ... ImportError: x",
    )
    out["gateway-ref"] = unavailable
    return out


def test_medians_ratios_and_added_latency() -> None:
    t = targets()
    assert t["gateway"].median(report.HEADLINE)["rps"] == pytest.approx(10_000)  # type: ignore[index]
    comp = report.comparisons(t)["gateway"]
    assert comp["vs_direct"] == pytest.approx(10_000 / 60_000)
    assert comp["vs_bare"] == pytest.approx(10_000 / 12_000)
    assert comp["vs_envoy_jwt"] == pytest.approx(10_000 / 18_000)
    assert comp["added_p50_1c_us"] == pytest.approx(150 - 20)
    assert comp["added_p99_1c_us"] == pytest.approx(900 - 20)  # the tail above direct's median
    assert report.comparisons(t)["gateway-ref"]["vs_direct"] is None


def test_goal_lines_say_met_or_missed() -> None:
    goals = {g.goal: g for g in report.goal_check(targets())}
    assert goals[">= 10k req/s at 32 connections (1 worker, async audit)"].met is True
    assert goals[">= 0.75 x bare Python proxy"].met is True  # 0.83
    assert goals[">= 0.5 x Envoy with jwt_authn"].met is True  # 0.56
    assert goals["added median latency at 1 connection <= 150 us (proxy on its own CPU)"].met is True  # +130
    assert goals["p99 at 1 connection <= 1 ms above direct's median (proxy on its own CPU)"].met is True  # +880
    assert goals["added median latency at 1 connection <= 150 us (proxy on wrk's CPU)"].met is None
    assert goals["2 workers >= 1.6 x one"].met is True  # 1.7
    assert goals["durable audit mode: cost stated"].measured == "0.80 x async req/s, CPU/req 125 us vs 100 us"
    slower = targets()
    slower["gateway-2w"] = targets()["gateway-durable"]
    assert {g.goal: g for g in report.goal_check(slower)}["2 workers >= 1.6 x one"].met is False


def test_hot_path_goals_are_taken_against_the_bare_proxy_of_the_same_run() -> None:
    goals = {g.goal: g for g in report.hot_path_goals(targets(), cpus=4)}
    assert all(g.issue == 11 for g in goals.values())
    assert goals[">= 0.75 x bare, req/s at 32 connections"].measured == "0.83 x"
    assert goals[">= 0.75 x bare, by CPU per request"].measured == "0.83 x"  # 83 us / 100 us
    # gateway +130 us over direct, bare +80 us: 50 us over the bare proxy's own added latency
    own_cpu = goals["added p50 at 1 connection <= bare's + 150 us (proxy on its own CPU)"]
    assert (own_cpu.measured, own_cpu.met) == ("+50 us", True)
    assert goals["added p50 at 1 connection <= bare's + 150 us (proxy on wrk's CPU)"].met is None
    assert goals[">= 0.6 x bare on the mix, req/s at 32 connections"].measured == "0.83 x"
    assert goals["2 workers >= 1.8 x one"].met is False  # 1.7
    slow = targets()
    slow["gateway"] = targets()["gateway-durable"]
    slow["gateway"].name = "gateway"
    goals = {g.goal: g for g in report.hot_path_goals(slow, cpus=4)}
    assert goals[">= 0.75 x bare, req/s at 32 connections"].met is False  # 8k / 12k
    assert goals["added p50 at 1 connection <= bare's + 150 us (proxy on its own CPU)"].met is True  # +100
    two_cpus = {g.goal for g in report.hot_path_goals(targets(), cpus=2)}
    assert "2 workers >= 1.8 x one (no third CPU for wrk: 2 CPUs, so understated)" in two_cpus


def test_goal_is_unmeasured_without_the_gateway() -> None:
    t = targets()
    del t["gateway"]
    assert all(g.met is None for g in report.goal_check(t))


def test_markdown_and_json_outputs(tmp_path: Path) -> None:
    t = targets()
    meta = {
        "started": "now",
        "command": "load/run.sh --quick",
        "rounds": 3,
        "duration_s": 5,
        "duration_1c_s": 3,
        "connections": 32,
        "pinning": "pinned",
    }
    check = [{"target": "gateway", "title": "denied: x", "expected": "403", "got": "200", "ok": False}]
    text = report.markdown(t, meta, check)
    assert "| gateway | 10,000 |" in text
    assert "| gateway-ref | unavailable |" in text
    assert "ImportError: x" in text
    assert "| gateway | denied: x | 403 | 200 |" in text
    assert "| 2 workers >= 1.6 x one | 1.70 x | yes |" in text
    data = json.loads(json.dumps(report.to_json(t, meta, check)))
    assert data["targets"]["gateway"]["runs"]["plain@32"]["median"]["rps"] == pytest.approx(10_000)
    assert len(data["targets"]["gateway"]["runs"]["plain@32"]["rounds"]) == 3
    assert data["targets"]["gateway"]["rss_peak_per_worker_mb"] == 50.0
    assert data["targets"]["gateway"]["runs"]["plain@32"]["cpu_median"]["cpu_us_per_request"] == pytest.approx(100)


def test_cpu_per_request_by_thread_and_noise_warning() -> None:
    t = targets()
    cpu = t["gateway"].cpu_median(report.HEADLINE)
    assert cpu is not None
    assert cpu["cpu_us_per_request"] == pytest.approx(100)
    assert cpu["main_thread_us_per_request"] == pytest.approx(80)
    assert cpu["other_threads_us_per_request"] == pytest.approx(20)
    assert t["gateway"].worst_foreign_cpu() == pytest.approx(0.3)
    text = report.markdown(t, {"connections": 32}, [])
    assert "| gateway | plain@32 | 100 us | 80 us | 20 us | 0.83 |" in text
    assert "| gateway-2w | plain@32 | 59 us | - | - | 1.42 |" in text
    assert "**Noisy run**: other processes took up to 30%" in text


def test_plots_are_png_files(tmp_path: Path) -> None:
    path = latency_plot(targets(), tmp_path / "latency.png", title="test")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 10_000
    soak = rss_plot([(5.0, 40.0), (10.0, 40.5)], tmp_path / "soak.png", "soak")
    assert soak.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
