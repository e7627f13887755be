"""Masking JSON response fields by JSON pointer (``*`` = every array item or object member).

The body is parsed once, every rule of the plan is applied, and it is serialised once. A card
number keeps at most its last four digits (and only when it has more than eight); any other masked
value becomes the string ``"[REDACTED]"`` (strings) or ``null`` (numbers, booleans, objects, arrays).
The concrete pointers of the values actually masked are returned for ``X-Redacted-Fields``. A body
that is not JSON raises ``ValueError``: the caller must not pass it on unmasked.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import orjson

from gateway.adapters.jsonpointer import locate
from gateway.adapters.routemap import MaskStyle
from gateway.authz.decision import MaskRule

REDACTED = "[REDACTED]"


def mask_last4(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return None
    digits = [c for c in str(value) if c.isdigit()]
    if len(digits) <= 8:
        return "*" * len(digits) if digits else REDACTED
    return "*" * (len(digits) - 4) + "".join(digits[-4:])


def masked_value(value: Any, style: MaskStyle) -> Any:
    if style == "last4":
        return mask_last4(value)
    return REDACTED if isinstance(value, str) else None


def mask_document(document: Any, masks: Iterable[MaskRule]) -> tuple[Any, list[str]]:
    """Mask a parsed JSON document (in place where it can): (the document, concrete pointers masked)."""
    masked: list[str] = []
    for rule in masks:
        if not rule.pointer.tokens:
            document = masked_value(document, rule.style)
            masked.append("")
            continue
        for container, key, pointer in locate(document, rule.pointer.tokens, rule.pointer.text):
            container[key] = masked_value(container[key], rule.style)
            masked.append(pointer)
    return document, masked


def dump(document: Any) -> bytes:
    try:
        return orjson.dumps(document)
    except orjson.JSONEncodeError:  # an integer beyond 64 bits (kept exact by ``load(exact=True)``)
        return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


def load(body: bytes, *, exact: bool = False) -> Any:
    """Parse a JSON answer; raises ``ValueError`` when it is not JSON (callers refuse, never pass on).

    orjson (strict RFC 8259, nesting up to 1024) is several times faster, but reads an integer beyond
    64 bits as a float. That is harmless where the document is only read (facts, subjects) and wrong
    where it is written back out masked, so ``exact`` (a document that will be re-serialised) uses the
    standard library, which keeps every number as sent."""
    if exact:
        return json.loads(body)
    return orjson.loads(body)


def apply_masks(body: bytes, masks: Iterable[MaskRule]) -> tuple[bytes, tuple[str, ...]]:
    rules = list(masks)
    if not rules:
        return body, ()
    try:
        document, masked = mask_document(load(body, exact=True), rules)
    except RecursionError:
        raise ValueError("the JSON document is nested too deeply to mask") from None
    if not masked:
        return body, ()
    return dump(document), tuple(masked)
