"""A ``DecisionRecord`` as the writer stores it: its ``decisions`` row and its ``decision_terms`` keys,
with what repeats encoded once.

From one request to the next most of a record is the same: the roles come from a cached token, the
categories, policies, clauses and purpose from a cached ``Decision``, the masked fields from the same
masking plan, ``extra`` from the same data subjects. So the JSON of a list, of ``extra`` and the term
keys of (categories, policies, purpose) are memoised by content (tuples of strings: hashing them is
cheaper than encoding them) in bounded dictionaries, cleared when full. The text is exactly what
``schema.record_row`` and ``schema.record_terms`` give (those stay the reference, and the tests compare
the two). Used by the writer thread only: not thread-safe.
"""

from __future__ import annotations

import json
from typing import Any

from gateway.audit.record import DecisionRecord
from gateway.audit.schema import TERM_CATEGORY, TERM_POLICY, TERM_PURPOSE, TERM_SUBJECT, time_to_us

MAX_ENTRIES = 4096
_EMPTY_LIST = "[]"
_EMPTY_DICT = "{}"


class RowEncoder:
    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self._max = max_entries
        self._lists: dict[tuple[str, ...], str] = {(): _EMPTY_LIST}
        self._extras: dict[tuple[tuple[str, str], ...], str] = {}
        self._terms: dict[Any, list[str]] = {}

    def _list(self, values: tuple[str, ...]) -> str:
        try:
            text = self._lists.get(values)
        except TypeError:  # not a tuple of strings (a caller's list): encode it as it is
            return json.dumps(values) if values else _EMPTY_LIST
        if text is None:
            text = json.dumps(values)
            if len(self._lists) >= self._max:
                self._lists.clear()
                self._lists[()] = _EMPTY_LIST
            self._lists[values] = text
        return text

    def _extra(self, extra: dict[str, str]) -> str:
        if not extra:
            return _EMPTY_DICT
        key = tuple(extra.items())
        try:
            text = self._extras.get(key)
        except TypeError:  # a value that is not hashable (not a str): encode it as it is
            return json.dumps(extra, default=str)
        if text is None:
            text = json.dumps(extra, default=str)
            if len(self._extras) >= self._max:
                self._extras.clear()
            self._extras[key] = text
        return text

    def row(self, rec: DecisionRecord) -> tuple[Any, ...]:
        """``schema.record_row(rec)``: the ``decisions`` row without its leading ``id``."""
        lst = self._list
        return (
            rec.decision_id, rec.gateway_id, rec.sequence, time_to_us(rec.time), rec.trace_id, rec.span_id,
            rec.parent_span_id, rec.method, rec.path, rec.route, rec.tenant, rec.resource_tenant,
            rec.principal_kind, rec.principal_id, rec.client_id, lst(rec.roles), rec.action,
            rec.resource_type, rec.resource_id, lst(rec.categories), rec.purpose, rec.recipient,
            rec.consent_ref, rec.decision, rec.reason, lst(rec.policies), lst(rec.clauses),
            lst(rec.masked_fields), rec.policy_hash, rec.status, rec.decision_us, rec.upstream_ms,
            rec.duration_us, self._extra(rec.extra), rec.inputs, rec.shadow_decision, lst(rec.shadow_policies),
        )

    def terms(self, rec: DecisionRecord) -> list[str]:
        """``schema.record_terms(rec)``: the ``decision_terms`` keys, without duplicates."""
        key: Any = (rec.categories, rec.policies, rec.purpose)
        try:
            fixed = self._terms.get(key)
        except TypeError:  # lists instead of tuples: nothing to memoise
            fixed, key = None, None
        if fixed is None:
            fixed = [TERM_CATEGORY + c for c in rec.categories]
            fixed.extend(TERM_POLICY + p for p in rec.policies)
            if rec.purpose:
                fixed.append(TERM_PURPOSE + rec.purpose)
            fixed = list(dict.fromkeys(fixed))
            if key is not None:
                if len(self._terms) >= self._max:
                    self._terms.clear()
                self._terms[key] = fixed
        if not rec.subjects:
            return fixed
        terms = [*fixed, *(TERM_SUBJECT + k for group in rec.subjects for k in group)]
        return list(dict.fromkeys(terms))
