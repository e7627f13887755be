"""The closing table of the hostile tests: ``python -m tests.hostile.tally FILE`` (the JSON lines the
test modules append to ``$HOSTILE_TALLY``, default ``<pytest basetemp>/hostile-tally.jsonl``)."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

COLUMNS = ("area", "inputs", "faults", "requests", "no answer", "no id", "not audited (HTTP layer)", "written",
           "lost", "wrong allows")
_COUNTS = ("requests", "unanswered", "without_id", "unaudited", "written", "lost", "wrong_allows")


def render(rows: list[dict[str, Any]]) -> str:
    merged: dict[str, dict[str, Any]] = {}
    for row in rows:
        into = merged.setdefault(
            row["area"],
            {"inputs": Counter(), "faults": [], **dict.fromkeys(_COUNTS, 0)},
        )  # fmt: skip
        into["inputs"].update(row["inputs"])
        into["faults"] += row["faults"]
        for key in _COUNTS:
            into[key] += row.get(key, 0)
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    total = Counter[str]()
    for area, row in sorted(merged.items()):
        inputs = sum(row["inputs"].values())
        cells = [area, inputs, len(row["faults"]), *(row[key] for key in _COUNTS)]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
        for key, value in zip(COLUMNS[1:], cells[1:], strict=True):
            total[key] += int(value)
    lines.append("| **total** | " + " | ".join(str(total[k]) for k in COLUMNS[1:]) + " |")
    details = []
    for area, row in sorted(merged.items()):
        if row["inputs"]:
            details.append(f"{area} inputs: " + ", ".join(f"{k} {v}" for k, v in sorted(row["inputs"].items())))
        if row["faults"]:
            details.append(f"{area} faults: " + ", ".join(row["faults"]))
    return "\n".join([*lines, "", *details])


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m tests.hostile.tally FILE", file=sys.stderr)
        return 2
    rows = [json.loads(line) for line in Path(argv[0]).read_text().splitlines() if line.strip()]
    print(render(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
