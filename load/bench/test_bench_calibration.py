"""The machine's own speed, so that ``load/bench/compare.py`` can compare a run with the committed
baseline on another machine (or the same one on a busier day): a fixed piece of plain CPython work
(dict and string building, sorting, ``json`` round trips) whose cost moves with the interpreter and
the CPU the way the hot path's pure-Python steps do. Every other benchmark's ratio to the baseline is
divided by this one's."""

from __future__ import annotations

import json
from typing import Any

CALIBRATION = "test_calibration"


def _work() -> int:
    items = [{"id": f"r-{i:04d}", "n": i * 7 % 101, "tags": ["a", "b", str(i % 5)]} for i in range(200)]
    items.sort(key=lambda item: (item["n"], item["id"]))
    text = json.dumps(items)
    return len(json.loads(text)) + sum(len(item["tags"]) for item in items)


def test_calibration(benchmark: Any) -> None:
    assert benchmark(_work) == 800
