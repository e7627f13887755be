"""What the audit writer adds to a record before it is written: its replay inputs, its shadow
decision and the keys of the data subjects it touched.

``RecordPreparer`` is the ``AuditLog(prepare=...)`` hook. The request path only keeps references to
its immutable decision and review (``record.replay``); everything here runs in the audit writer
thread, before the batch is committed, so a response never waits for it (durable mode waits for the
commit, and so for this). The shadow engine is used from that thread only.

Data subjects: the keys the request names (``Decision.subjects``) and those the answer named
(``ResponseReview.subjects``), one group per subject: for a single record, the request's keys and the
answer's are the same person's; for a list, each item is a person and the request's own keys (if any)
a group of their own. E-mail addresses are canonicalised and kept only as keyed pseudonyms
(``email:p:...``), the same pseudonyms the replay inputs use, so ``gateway audit subject ADDRESS``
finds them with the key and the store alone reveals no address.

What repeats is prepared once. The decision cache hands the same immutable ``Decision`` object to
every request it answers, and a review is a value (what was masked, withheld and read from the
answer), so the subjects, their JSON and the replay inputs are a pure function of (that object, the
review's content) and are memoised on it (bounded; the memo holds the decision, so its ``id`` is
never reused while the entry lives). A review that refused the answer is prepared each time. The
shadow decision is never memoised: the shadow set can be reloaded at any time.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable

from gateway.audit.pseudonyms import Pseudonymise
from gateway.audit.record import DecisionRecord
from gateway.authz.decision import Decision
from gateway.authz.emails import canonical_or_folded
from gateway.authz.engine import PolicyEngine
from gateway.authz.replay import InputsEncoder, Replayable, capture, shadow_decider
from gateway.authz.review import ResponseReview

EMAIL_PREFIX = "email:"


def subject_key(key: str, pseudonym: Pseudonymise) -> str:
    """A key as stored: an e-mail address canonicalised and pseudonymised, any other key as it is."""
    if key.startswith(EMAIL_PREFIX):
        return EMAIL_PREFIX + pseudonym(canonical_or_folded(key[len(EMAIL_PREFIX):]))
    return key


def subject_groups(
    decision: Decision, review: ResponseReview | None, pseudonym: Pseudonymise
) -> tuple[tuple[str, ...], ...]:
    request = tuple(subject_key(k, pseudonym) for k in decision.subjects)
    answer = tuple(tuple(subject_key(k, pseudonym) for k in group) for group in (review.subjects if review else ()))
    basis = decision.basis
    single = basis is None or basis.facts.route.subjects.items is None
    if single:
        merged = tuple(dict.fromkeys((*request, *(k for group in answer for k in group))))
        return (merged,) if merged else ()
    return ((request,) if request else ()) + answer


def _memoised(pseudonym: Pseudonymise, size: int = 4096) -> Pseudonymise:
    """The same addresses come back request after request: their HMAC is computed once (bounded)."""
    return functools.lru_cache(maxsize=size)(pseudonym)


#: What a record gets from its (decision, review): subject groups, their JSON, the replayable item and
#: its inputs JSON.
_Prepared = tuple[tuple[tuple[str, ...], ...], str, "Replayable | None", str]


def _review_key(review: ResponseReview | None) -> tuple[object, ...] | None:
    """The content of a review that preparing reads; None = do not memoise (a refusal)."""
    if review is None:
        return ()
    if review.refusal is not None:
        return None
    return (review.pointers, review.withheld, review.policies, review.reviewed, review.reviewed_at, review.subjects)


class RecordPreparer:
    MAX_MEMO = 1024

    def __init__(self, pseudonym: Pseudonymise, shadow: Callable[[], PolicyEngine | None] | None = None) -> None:
        self.pseudonym = _memoised(pseudonym)
        self.encode = InputsEncoder(self.pseudonym)
        self.shadow = shadow_decider(shadow) if shadow is not None else None
        self._memo: dict[tuple[int, tuple[object, ...]], tuple[Decision, _Prepared]] = {}

    def __call__(self, record: DecisionRecord) -> None:
        pending = record.replay  # (decision, review or None), set on the request path
        if pending is None:
            return
        decision, review = pending
        groups, subjects_json, item, inputs = self._prepared(decision, review)
        if groups:
            record.subjects = groups
            record.extra["subjects"] = subjects_json
        if item is None:
            return
        record.inputs = inputs
        if self.shadow is not None:
            record.shadow_decision, record.shadow_policies = self.shadow(item)

    def _prepared(self, decision: Decision, review: ResponseReview | None) -> _Prepared:
        content = _review_key(review)
        if content is None:
            return self._prepare(decision, review)
        key = (id(decision), content)
        try:
            found = self._memo.get(key)
        except TypeError:  # a fact value that is not hashable: prepare it as it is
            return self._prepare(decision, review)
        if found is not None and found[0] is decision:
            return found[1]
        prepared = self._prepare(decision, review)
        if len(self._memo) >= self.MAX_MEMO:
            self._memo.clear()
        self._memo[key] = (decision, prepared)
        return prepared

    def _prepare(self, decision: Decision, review: ResponseReview | None) -> _Prepared:
        groups = subject_groups(decision, review, self.pseudonym)
        subjects_json = json.dumps([list(g) for g in groups], separators=(",", ":")) if groups else ""
        item: Replayable | None = capture(decision, review)
        return groups, subjects_json, item, self.encode(item) if item is not None else ""
