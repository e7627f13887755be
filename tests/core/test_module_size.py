"""No module of the gateway grows past 450 lines without saying why in a ``Size:`` paragraph."""

from __future__ import annotations

import ast
from pathlib import Path

import gateway

LIMIT = 450
PACKAGE = Path(gateway.__file__).parent


def test_every_long_module_states_its_reason() -> None:
    unexplained = []
    for path in sorted(PACKAGE.rglob("*.py")):
        source = path.read_text(encoding="utf-8")
        if source.count("\n") <= LIMIT:
            continue
        docstring = ast.get_docstring(ast.parse(source)) or ""
        if "\nSize: " not in f"\n{docstring}":
            unexplained.append(f"{path.relative_to(PACKAGE.parent)} ({source.count(chr(10))} lines)")
    assert not unexplained, f"over {LIMIT} lines without a 'Size:' paragraph in the docstring: {unexplained}"
