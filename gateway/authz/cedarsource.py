"""Reading Cedar source text: policy boundaries with line numbers, and the schema's hierarchies.

cedarpy reports parse errors without a position and validation errors by positional policy id
(``policy0``, ``policy1``, ...), so the loader splits each file into its policies here, remembering
where each starts, and maps every diagnostic back to ``file:line``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Chunk:
    line: int  # 1-based line of the policy's first token (its first annotation)
    text: str


def _strip(text: str, *, strings: bool = True) -> str:
    """The text with comments (and string contents, if ``strings``) blanked out, same length and lines."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        char = text[i]
        if char == "/" and i + 1 < n and text[i + 1] == "/":
            end = text.find("\n", i)
            end = n if end == -1 else end
            out.append(" " * (end - i))
            i = end
        elif char == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            j = min(j + 1, n)
            inner = text[i + 1 : j - 1]
            out.append('"' + ("".join("\n" if c == "\n" else " " for c in inner) if strings else inner) + '"')
            i = j
        else:
            out.append(char)
            i += 1
    return "".join(out)[:n]


def split_statements(text: str) -> list[Chunk]:
    """Split Cedar text at top-level ``;`` (outside strings, comments and brackets)."""
    blank = _strip(text)
    chunks: list[Chunk] = []
    depth = 0
    start = 0
    for i, char in enumerate(blank):
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth = max(0, depth - 1)
        elif char == ";" and depth == 0:
            chunks.append(_chunk(text, blank, start, i + 1))
            start = i + 1
    if blank[start:].strip():
        chunks.append(_chunk(text, blank, start, len(text)))
    return chunks


def _chunk(text: str, blank: str, start: int, end: int) -> Chunk:
    offset = start
    while offset < end and blank[offset].isspace():
        offset += 1
    return Chunk(text.count("\n", 0, offset) + 1, text[start:end])


_ACTION = re.compile(r"^\s*action\s+(.+?)(?:\s+in\s*\[(.*?)\])?\s*(?:appliesTo\b.*)?;?\s*$", re.S)
_ENTITY = re.compile(r"^\s*entity\s+(.+?)(?:\s+in\s*\[(.*?)\])?\s*(?:=?\s*\{.*\})?\s*;?\s*$", re.S)


def _names(listing: str) -> list[str]:
    names = []
    for raw in listing.split(","):
        name = raw.strip().strip('"')
        if name.startswith("Action::"):
            name = name[len("Action::") :].strip('"')
        if name:
            names.append(name)
    return names


@dataclass(frozen=True, slots=True)
class SchemaShape:
    """The action and entity-type hierarchies declared by a schema (used to slice policies)."""

    actions: frozenset[str]
    action_members: dict[str, frozenset[str]]  # action -> itself and every action in it, transitively
    type_members: dict[str, frozenset[str]]  # entity type -> itself and every type declared in it


def _close(direct_parents: dict[str, set[str]]) -> dict[str, frozenset[str]]:
    members: dict[str, set[str]] = {name: {name} for name in direct_parents}
    for name in direct_parents:
        stack = list(direct_parents[name])
        seen: set[str] = set()
        while stack:
            parent = stack.pop()
            if parent in seen:
                continue
            seen.add(parent)
            members.setdefault(parent, {parent}).add(name)
            stack.extend(direct_parents.get(parent, ()))
    return {k: frozenset(v) for k, v in members.items()}


def schema_shape(schema_text: str) -> SchemaShape:
    action_parents: dict[str, set[str]] = {}
    type_parents: dict[str, set[str]] = {}
    for chunk in split_statements(schema_text):
        body = _strip(chunk.text, strings=False).strip()  # action names may be quoted strings
        if re.match(r"action\b", body):
            found = _ACTION.match(body)
            if found:
                for name in _names(found.group(1)):
                    action_parents.setdefault(name, set()).update(_names(found.group(2) or ""))
        elif re.match(r"entity\b", body):
            found = _ENTITY.match(body)
            if found:
                for name in _names(found.group(1)):
                    type_parents.setdefault(name, set()).update(_names(found.group(2) or ""))
    return SchemaShape(
        actions=frozenset(action_parents),
        action_members=_close(action_parents),
        type_members=_close(type_parents),
    )
