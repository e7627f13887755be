"""JSON pointers (RFC 6901) over parsed JSON: the one walker that lifting, masking, record facts and
data subjects share, so a pointer means the same value to all of them.

- ``parse(text)``: the unescaped reference tokens (``~1`` is ``/``, ``~0`` is ``~``); ``""`` is the
  whole document, anything else starts with ``/``. A ``~`` followed by anything but ``0`` or ``1`` is
  an error (``PointerError``), not a literal.
- ``parse_member(text)``: the same for the pointers route maps write, which name a member inside the
  document: not ``""``, no empty token.
- ``resolve(document, tokens)``: the value, or ``MISSING``. On an object a token is a member name,
  compared exactly; on an array it must be an index as RFC 6901 writes one: ``0`` or ASCII digits
  without a leading zero, of an existing item (so ``01``, ``+1``, ``1e0``, an Arabic-Indic digit and
  ``-``, the item after the last, name nothing).
- ``locate(document, tokens, text)``: where a pointer whose ``*`` tokens stand for every array item or
  object member leads: the container, key and concrete pointer of every value reached (what masking
  replaces). Outside ``locate``, ``*`` is an ordinary member name.

The gateway does not use the ``jsonpointer`` package: it knows no ``*``, signals a missing value by
raising (costly on the request path, where most masked fields are absent) and would be a dependency
for a few dozen lines.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from typing import Any, Final

WILDCARD: Final = "*"
#: No list in memory has more items than a 19-digit index can count (sys.maxsize has 19 digits).
_MAX_INDEX_DIGITS: Final = 19


class _Missing(enum.Enum):
    MISSING = enum.auto()

    def __repr__(self) -> str:
        return "MISSING"


#: What ``resolve`` answers for a pointer that names no value (JSON ``null`` is a value: ``None``).
MISSING: Final = _Missing.MISSING


class PointerError(ValueError):
    """Text that is not a JSON pointer."""


def parse(text: str) -> tuple[str, ...]:
    """The unescaped reference tokens of ``text``; ``PointerError`` if it is not a JSON pointer."""
    if not text:
        return ()
    if text[0] != "/":
        raise PointerError(f"JSON pointer {text!r} must start with '/'")
    tokens = text[1:].split("/")
    if "~" not in text:
        return tuple(tokens)
    out: list[str] = []
    for token in tokens:
        if "~" in token:
            if token.count("~") != token.count("~0") + token.count("~1"):
                raise PointerError(f"JSON pointer {text!r}: '~' must be followed by '0' or '1'")
            token = token.replace("~1", "/").replace("~0", "~")
        out.append(token)
    return tuple(out)


def parse_member(text: str) -> tuple[str, ...]:
    """``parse`` for a pointer that must name a member inside the document (what route maps write):
    not the whole document, and no empty token."""
    if not text:
        raise PointerError("a JSON pointer must start with '/'")
    tokens = parse(text)
    if "" in tokens:
        raise PointerError(f"JSON pointer {text!r} has an empty token")
    return tokens


def escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def render(tokens: Iterable[str]) -> str:
    """The pointer text of ``tokens`` (the inverse of ``parse``)."""
    return "".join(["/" + escape(token) for token in tokens])


def array_index(token: str, length: int) -> int | None:
    """The item ``token`` names in an array of ``length`` items, or None: not an RFC 6901 index
    (``0``, or ASCII digits without a leading zero), or past the end."""
    if not token.isdigit() or not token.isascii() or len(token) > _MAX_INDEX_DIGITS:
        return None
    if token[0] == "0" and token != "0":
        return None
    index = int(token)
    return index if index < length else None


def resolve(document: Any, tokens: Iterable[str]) -> Any:
    """The value at ``tokens`` in ``document``, or ``MISSING``."""
    node = document
    for token in tokens:
        if isinstance(node, dict):
            node = node.get(token, MISSING)
            if node is MISSING:
                return MISSING
        elif isinstance(node, list):
            index = array_index(token, len(node))
            if index is None:
                return MISSING
            node = node[index]
        else:
            return MISSING
    return node


#: One value ``locate`` reached: its container (a dict or list), its key there and its concrete pointer.
Location = tuple[Any, str | int, str]


def locate(document: Any, tokens: tuple[str, ...], text: str | None = None) -> list[Location]:
    """Every value ``tokens`` reach in ``document``, ``*`` standing for every array item or object
    member, in document order. Empty for ``()`` (the document has no container). ``text``, the
    pointer's own text if the caller has it, saves rendering it for a pointer without ``*``."""
    if not tokens:
        return []
    if WILDCARD not in tokens:  # one value at most: the common case, kept cheap
        container = document if len(tokens) == 1 else resolve(document, tokens[:-1])
        last = tokens[-1]
        key: str | int | None = None
        if isinstance(container, dict):
            key = last if last in container else None
        elif isinstance(container, list):
            key = array_index(last, len(container))
        return [] if key is None else [(container, key, render(tokens) if text is None else text)]
    frontier: list[tuple[Any, str]] = [(document, "")]
    final = len(tokens) - 1
    for depth, token in enumerate(tokens):
        reached: list[Location] = []
        for node, path in frontier:
            if isinstance(node, dict):
                if token == WILDCARD:
                    reached.extend((node, member, f"{path}/{escape(member)}") for member in node)
                elif token in node:
                    reached.append((node, token, f"{path}/{escape(token)}"))
            elif isinstance(node, list):
                if token == WILDCARD:
                    reached.extend((node, index, f"{path}/{index}") for index in range(len(node)))
                elif (index := array_index(token, len(node))) is not None:
                    reached.append((node, index, f"{path}/{index}"))
        if depth == final or not reached:
            return reached
        frontier = [(container[key], path) for container, key, path in reached]
    return []  # not reached: the loop returns at the last token
