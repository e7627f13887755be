"""Rendering query results as a JSON array, CSV (lists joined with ``;``) or an aligned text table."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from typing import Any

TABLE_FIELDS = (
    "time", "decision", "status", "principal", "purpose", "action", "resource_type", "resource_id",
    "categories", "policies", "decision_id",
)


def _cell(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ";".join(str(v) for v in value)
    return "" if value is None else str(value)


def render(rows: Sequence[dict[str, Any]], fmt: str, fields: Sequence[str] | None = None) -> str:
    if fmt == "json":
        return json.dumps(list(rows), indent=2, ensure_ascii=False)
    columns = list(fields) if fields is not None else (list(rows[0]) if rows else [])
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_cell(row.get(c)) for c in columns])
        return buffer.getvalue().rstrip("\n")
    if fmt == "table":
        return _table(rows, columns)
    raise ValueError(f"unknown format {fmt!r}")


def _table(rows: Sequence[dict[str, Any]], columns: list[str]) -> str:
    if not rows:
        return "(no matching decisions)"
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    lines.extend("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in cells)
    return "\n".join(lines)


def render_record(record: dict[str, Any]) -> str:
    """One decision in full, ``field  value`` per line; list items one a line."""
    width = max(len(k) for k in record)
    lines = []
    for key, value in record.items():
        if isinstance(value, list | tuple) and len(value) > 1:
            # one item a line: clauses are long and may contain any punctuation
            lines.append(f"{key.ljust(width)}  {value[0]}")
            lines.extend(f"{'':{width}}  {item}" for item in value[1:])
            continue
        text = (json.dumps(value, ensure_ascii=False) if value else "") if isinstance(value, dict) else _cell(value)
        lines.append(f"{key.ljust(width)}  {text}".rstrip())
    return "\n".join(lines)
