"""Whose data a route's records are: the data subjects a route map names, for the audit trail.

A route says how its record names its data subject (``subjects`` in a route map)::

    subjects = [
      { kind = "contact", param = "id" },              # a path parameter
      { kind = "contact", pointer = "/contact_id" },   # a member of the upstream's JSON answer
      { kind = "email", pointer = "/email" },
      { kind = "email", lifted = "email" },            # a field lifted from the request body
      { kind = "user", param = "userId" },             # a mailbox owner ("me" is the caller)
    ]

Kinds: ``contact`` (a contact id of the services), ``call`` (a call id: its recording and transcript
are the caller's data), ``user`` (an Entra object id: a mailbox owner, an analytics user id) and
``email`` (an e-mail address, canonicalised, and kept in the audit store only as a keyed pseudonym).
Pointers with ``*`` (``/contacts/*/id``) name the items of one array: each item is one data subject,
and the keys read from one item (its contact id and its e-mail address) are known to be the same
person's, which is how ``gateway audit subject`` finds a contact's records from an e-mail address.
Keys read from one record (no ``*``) and from the path are one group likewise.

The keys are ``kind:value`` strings. A route that reads subjects from its answer has its answer read
(``Decision.inspects_response``), so the audit knows whose data a response carried even when nothing
is masked; an answer too large to be read is refused (502) as for masking, never passed on unaccounted.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from gateway.adapters.jsonpointer import PointerError, parse_member, resolve

KINDS = frozenset({"contact", "call", "user", "email"})
MAX_VALUE = 320
#: Most subject groups one answer may yield (a list of more items is cut there, and the record says so).
MAX_GROUPS = 2048


@dataclass(frozen=True, slots=True)
class SubjectRule:
    kind: str
    param: str | None = None
    pointer: tuple[str, ...] | None = None  # JSON pointer tokens (one may be "*")
    lifted: str | None = None


@dataclass(frozen=True, slots=True)
class Subjects:
    """A route's subject rules, split by where their values come from."""

    from_request: tuple[SubjectRule, ...] = ()  # path parameters and lifted body fields
    from_answer: tuple[SubjectRule, ...] = ()  # members of the JSON answer
    items: tuple[str, ...] | None = None  # the array whose items are subjects (a "*" pointer), if any

    @property
    def reads_answer(self) -> bool:
        return bool(self.from_answer)

    def request_keys(
        self, params: Mapping[str, str], caller: str, body: Iterable[tuple[str, str]]
    ) -> tuple[str, ...]:
        """The keys the request itself names (``me`` is the caller's own oid)."""
        lifted = dict(body)
        keys: list[str] = []
        for rule in self.from_request:
            value = params.get(rule.param) if rule.param is not None else lifted.get(rule.lifted or "")
            if rule.kind == "user" and value == "me":
                value = caller
            if isinstance(value, str) and value:
                keys.append(f"{rule.kind}:{value[:MAX_VALUE]}")
        return tuple(dict.fromkeys(keys))

    def answer_groups(self, document: Any) -> tuple[tuple[str, ...], ...]:
        """The subjects the answer names: one group of keys per record (per array item for a list)."""
        if not self.from_answer:
            return ()
        if self.items is None:
            group = _keys(self.from_answer, document, 0)
            return (group,) if group else ()
        array = resolve(document, self.items)
        if not isinstance(array, list):
            return ()
        skip = len(self.items) + 1
        groups = []
        for item in array[:MAX_GROUPS]:
            group = _keys(self.from_answer, item, skip)
            if group:
                groups.append(group)
        return tuple(groups)


def _keys(rules: Iterable[SubjectRule], node: Any, skip: int) -> tuple[str, ...]:
    keys = []
    for rule in rules:
        assert rule.pointer is not None
        value = resolve(node, rule.pointer[skip:])
        if isinstance(value, str) and value:
            keys.append(f"{rule.kind}:{value[:MAX_VALUE]}")
    return tuple(dict.fromkeys(keys))


def parse_subjects(raw: Any, params: set[str], lifted: set[str]) -> Subjects:
    """A route map's ``subjects`` list; ``ValueError`` naming what is wrong."""
    if raw is None:
        return Subjects()
    if not isinstance(raw, list) or not raw:
        raise ValueError("subjects must be a non-empty list of {kind, param | pointer | lifted} tables")
    request: list[SubjectRule] = []
    answer: list[SubjectRule] = []
    for item in raw:
        if not isinstance(item, dict) or set(item) - {"kind", "param", "pointer", "lifted"}:
            raise ValueError("each subject is a table with kind and one of param, pointer, lifted")
        kind = item.get("kind")
        if kind not in KINDS:
            raise ValueError(f"subject kind {kind!r}: expected one of {', '.join(sorted(KINDS))}")
        sources = [key for key in ("param", "pointer", "lifted") if key in item]
        if len(sources) != 1 or not isinstance(item[sources[0]], str):
            raise ValueError("a subject names exactly one of param, pointer or lifted (a string)")
        source, value = sources[0], item[sources[0]]
        if source == "param":
            if value not in params:
                raise ValueError(f"subject param {value!r} is not a parameter of the path")
            request.append(SubjectRule(kind, param=value))
        elif source == "lifted":
            if value not in lifted:
                raise ValueError(f"subject lifted {value!r} is not a field the route lifts")
            request.append(SubjectRule(kind, lifted=value))
        else:
            try:
                tokens = parse_member(value)
            except PointerError as exc:
                raise ValueError(f"subject pointer: {exc}") from None
            answer.append(SubjectRule(kind, pointer=tokens))
    items = None
    stars = [rule.pointer.count("*") for rule in answer if rule.pointer is not None]
    if stars:
        if max(stars) > 1 or (max(stars) == 1 and min(stars) == 0):
            raise ValueError("subject pointers name either one record or the items of one array (one '*' each)")
        if max(stars) == 1:
            prefixes = {r.pointer[: r.pointer.index("*")] for r in answer if r.pointer is not None}
            if len(prefixes) != 1 or not next(iter(prefixes)):
                raise ValueError("subject pointers with '*' must all name members of the items of one array")
            items = prefixes.pop()
    return Subjects(tuple(request), tuple(answer), items)
