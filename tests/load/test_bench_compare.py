"""``load/bench/compare.py``: the bench regression guard reads pytest-benchmark's JSON, removes the
machine's speed with the calibration benchmark, and lists the steps that grew. No timing here: the
inputs are fixed documents."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from load.bench.compare import CALIBRATION, compare, fastest, main


def bench_json(figures_us: dict[str, float]) -> dict[str, object]:
    return {"benchmarks": [{"name": name, "stats": {"min": us / 1e6}} for name, us in figures_us.items()]}


BASE = {CALIBRATION: 100.0, "test_sign": 30.0, "test_match_remembered": 0.5, "test_record_durable[8]": 40.0}


def test_a_slower_machine_is_not_a_regression_but_a_grown_step_is() -> None:
    slower = {k: v * 2 for k, v in BASE.items()}  # everything twice as slow: the machine, not the code
    rows, new, gone = compare(slower, BASE)
    assert [round(r.ratio, 3) for r in rows] == [1.0, 1.0, 1.0] and not new and not gone
    grown = dict(BASE, test_sign=45.0)  # one step 50% dearer on the same machine
    ratios = {r.name: r.ratio for r in compare(grown, BASE)[0]}
    assert ratios["test_sign"] == pytest.approx(1.5) and ratios["test_match_remembered"] == pytest.approx(1.0)


def test_the_command_lists_grown_steps_and_strict_fails_on_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    baseline = tmp_path / "baseline.json"
    run = tmp_path / "run.json"
    run.write_text(json.dumps(bench_json(BASE)))
    assert main([str(run), "--baseline", str(baseline), "--write-baseline"]) == 0
    assert fastest(json.loads(baseline.read_text())) == BASE
    run.write_text(json.dumps(bench_json(dict(BASE, test_sign=40.0, test_new=1.0))))
    capsys.readouterr()
    assert main([str(run), "--baseline", str(baseline)]) == 0
    out = capsys.readouterr().out
    assert "test_sign" in out and "GREW" in out.split("test_sign", 1)[1].splitlines()[0]
    assert "1 step(s) grew by more than 30%" in out and "test_new" in out
    assert main([str(run), "--baseline", str(baseline), "--strict"]) == 1
    assert main([str(run), "--baseline", str(baseline), "--strict", "--threshold", "0.5"]) == 0


def test_a_run_without_calibration_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run.json"
    run.write_text(json.dumps(bench_json({"test_sign": 30.0})))
    baseline = tmp_path / "baseline.json"
    baseline.write_text(json.dumps({"fastest_us": BASE}))
    assert main([str(run), "--baseline", str(baseline)]) == 2
    assert CALIBRATION in capsys.readouterr().err
    assert main([str(tmp_path / "missing.json")]) == 2
