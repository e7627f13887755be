"""Reading a record's facts (``context.record``) from a JSON document, by the route map's rules.

A route's ``response_facts`` name JSON pointers into the record: the upstream's answer, or the
document ``facts_from`` names (fetched before forwarding, for answers that are not JSON or that
arrive too late, such as a recording or an export). Two kinds of fact exist:

- ``age``: a time, RFC 3339 with an offset (``2016-03-14T09:26:53Z``) or seconds since the epoch,
  turned into the record's age in whole days at the moment of the decision. Whole days lose nothing
  for a retention measured in days (``age_days >= N`` exactly when the record is at least ``N * 86400``
  seconds old) and let records of the same age share one cached decision. A time in the future
  counts as age 0.
- ``bool``: a JSON boolean.
- ``tenant``: the id of the tenant the record belongs to (a string of at most 64 characters of
  ``[A-Za-z0-9._-]``, lower-cased), for answers that can hold several tenants' records; it becomes
  the entity ``Tenant::"<id>"`` in ``context.record.tenant``.

Reading is strict: a required fact that is missing, or present in another form (a number for a
boolean, a time without an offset, a string longer than 64 characters), raises ``FactError`` and
the caller refuses the record rather than pass it on unchecked. What is read is bounded: one value
per rule, strings of at most 64 characters.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from gateway.adapters.jsonpointer import MISSING, resolve
from gateway.adapters.routemap import FactRule
from gateway.authz.facts import RecordFacts

DAY_SECONDS = 86400
MAX_TIME_TEXT = 64
MAX_EPOCH_SECONDS = 253402300799  # 9999-12-31T23:59:59Z

#: Facts as read, before the request time is known: ``(name, kind, value)``, ages as epoch seconds.
RawFacts = tuple[tuple[str, str, int | bool | str], ...]
TENANT_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


class FactError(ValueError):
    """The document lacks a required fact, or holds one in a form the rule does not accept."""


def parse_time(value: Any) -> int:
    """Seconds since the epoch of an RFC 3339 time (with an offset) or a number of seconds."""
    if isinstance(value, bool):
        raise FactError("a time, not a boolean")
    if isinstance(value, int | float):
        if not math.isfinite(value) or abs(value) > MAX_EPOCH_SECONDS:
            raise FactError("a time in seconds out of range")
        return int(value)
    if not isinstance(value, str) or not 0 < len(value) <= MAX_TIME_TEXT:
        raise FactError("a time must be an RFC 3339 string or seconds since the epoch")
    try:
        instant = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise FactError("not an RFC 3339 time") from None
    if instant.tzinfo is None:
        raise FactError("an RFC 3339 time needs an offset (Z or +hh:mm)")
    return int(instant.timestamp())


def read_facts(rules: Iterable[FactRule], document: Any, skip: int = 0) -> RawFacts:
    """The facts ``rules`` name in ``document``; ``skip`` leading pointer tokens are dropped (for an
    array item, the array's pointer and the ``*``). ``FactError`` when a required one is unusable."""
    out: list[tuple[str, str, int | bool | str]] = []
    for rule in rules:
        value = resolve(document, rule.pointer.tokens[skip:])
        if value is MISSING or value is None:
            if rule.required:
                raise FactError(f"the record has no {rule.pointer.text}")
            continue
        try:
            if rule.kind == "age":
                out.append((rule.name, rule.kind, parse_time(value)))
            elif rule.kind == "tenant":
                if not isinstance(value, str) or not TENANT_ID.fullmatch(value):
                    raise FactError("a tenant id must be a string of letters, digits, '.', '_' or '-'")
                out.append((rule.name, rule.kind, value.lower()))
            elif isinstance(value, bool):
                out.append((rule.name, rule.kind, value))
            else:
                raise FactError("expected true or false")
        except FactError as exc:
            raise FactError(f"{rule.pointer.text}: {exc}") from None
    return tuple(out)


def record_facts(raw: RawFacts, now: float) -> RecordFacts:
    """``context.record`` at the request time ``now``: ages in whole days, sorted by name."""
    out: list[tuple[str, int | bool | str]] = []
    for name, kind, value in raw:
        if kind == "age":
            out.append((name, max(0, (int(now) - int(value)) // DAY_SECONDS)))
        else:
            out.append((name, value))
    return tuple(sorted(out))
