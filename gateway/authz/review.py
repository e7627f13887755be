"""The second look: deciding again once the upstream answered, then masking the answer.

Some facts a policy needs are only in the upstream's answer: how old the record is (retention), or
whether its data subject opted out of marketing. The route map names them (``response_facts``);
the decision made before forwarding knows they are still to come (``Decision.reviews_record``), and
``review`` reads them from the buffered JSON answer and asks Cedar again with ``context.record`` set,
through the same engine, slices and decision cache (the facts are part of the key; ages are whole
days, so the cache stays useful). Then the decision's masks are applied.

- One record (pointers without ``*``): a refusal refuses the whole answer. The gateway answers 403
  with the refusing policies instead of the body, and audits that.
- A list (pointers with ``*``, all items of one array): each item is decided on its own facts; an
  item a policy refuses is withheld: replaced by ``null`` (so the other items keep their positions)
  and its pointer (``/events/3``) listed with the masked fields in ``X-Redacted-Fields``. The answer
  itself stays allowed. Items with the same facts share one decision.
- Only 2xx answers carry a record; any other status is passed on, still masked. An empty body gives
  nothing away and is passed on as it is.
- Failing closed: an answer whose facts cannot be read (not JSON, a required fact missing or of
  another type, no array where the items should be, more distinct records than the review bound) is
  refused with 502 ``unreadable_response``, never passed on unchecked; so is a body that must be masked
  but is not JSON. A Cedar error refuses (403) like any other evaluation error.

What it never does: read a non-JSON body, keep a body, or review a refused decision.
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass, field
from typing import Any

from gateway.adapters.jsonpointer import resolve
from gateway.adapters.routemap import Pointer
from gateway.authz.decision import FAIL_CLOSED, Basis, Decision, Verdict, fail_closed_reason
from gateway.authz.facts import Facts, RecordFacts
from gateway.authz.masking import dump, load, mask_document
from gateway.authz.recordfacts import FactError, RawFacts, read_facts, record_facts

UNREADABLE = "unreadable_response"
DEFAULT_MAX_RECORDS = 2048


@dataclass(frozen=True, slots=True)
class ResponseReview:
    """What to do with the upstream's answer.

    ``refusal``: None to pass ``body`` on; else a full deny decision to answer with instead (403 with
    the refusing policies' reasons, or 502 ``unreadable_response``) and to audit.
    ``body``: the answer to send (masked; withheld items replaced by null); empty on a refusal.
    ``pointers``: the concrete JSON pointers redacted (withheld items and masked fields), for
    ``X-Redacted-Fields`` and the audit record's masked fields.
    ``withheld``: the array items withheld whole; ``policies``: the policies that withheld them.
    ``reviewed``: the distinct record facts decided, in order, each with whether it was allowed, and
    ``reviewed_at`` the time they were decided at (what a replay of the request needs).
    """

    refusal: Decision | None
    body: bytes
    pointers: tuple[str, ...] = ()
    withheld: tuple[str, ...] = ()
    policies: tuple[str, ...] = ()
    # for the audit record's replay inputs, not part of what is answered (so not compared)
    reviewed: tuple[tuple[RecordFacts, bool], ...] = field(default=(), compare=False)
    reviewed_at: int = field(default=0, compare=False)
    # the data subjects the answer names, one group of keys per record given (withheld items are not)
    subjects: tuple[tuple[str, ...], ...] = field(default=(), compare=False)


def is_json_type(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


def fail_closed(decision: Decision, status: int, reason: str, detail: str, clause: str) -> Decision:
    """``decision`` refused because a fact could not be had or read (no policy decided it)."""
    return dataclasses.replace(
        decision,
        allowed=False,
        status=status,
        reason=reason,
        detail=detail,
        policy_ids=(FAIL_CLOSED,),
        reasons=[fail_closed_reason(clause)],
        masks=(),
        reviews_record=False,
    )


def unreadable(decision: Decision, detail: str) -> Decision:
    """A 502 refusal: the answer could not be checked, so it is not passed on."""
    return fail_closed(decision, 502, UNREADABLE, detail, f"{detail}; the answer is not passed on unchecked")


def record_refusal(decision: Decision, verdict: Verdict, cached: bool) -> Decision:
    """The decision refused once the record's facts were known."""
    return dataclasses.replace(
        decision,
        allowed=False,
        status=verdict.status,
        reason=verdict.reason,
        detail=f"{verdict.detail}: the record itself may not be given for this request",
        policy_ids=verdict.policy_ids,
        reasons=list(verdict.reasons),
        masks=(),
        cached=cached,
        reviews_record=False,
    )


def decide_record(basis: Basis, record: RecordFacts, now: float) -> tuple[Verdict, bool]:
    """The verdict on ``basis``'s request once the record's facts are known, at time ``now``."""
    return basis.engine.decide(basis.facts.with_record(record, int(now)))


def review_prefetched(decision: Decision, raw: RawFacts | None, now: float) -> Decision:
    """The decision once the facts of a ``facts_from`` route were fetched (None: no such record)."""
    basis = decision.basis
    if basis is None or not decision.allowed:
        return decision
    if raw is None:
        return fail_closed(
            decision,
            403,
            "record_not_found",
            "the record's facts cannot be had",
            "the record the decision needs facts about was not found upstream; denied because the "
            "decision cannot be made",
        )
    record = record_facts(raw, now)
    verdict, cached = decide_record(basis, record, now)
    decided = decision if verdict.allowed else record_refusal(decision, verdict, cached)
    return dataclasses.replace(decided, record_facts=record, record_time=int(now))


def review(
    decision: Decision,
    status: int,
    content_type: str,
    body: bytes,
    now: float,
    max_records: int = DEFAULT_MAX_RECORDS,
) -> ResponseReview:
    """Check and mask one upstream answer for ``decision`` (see the module docstring). Never raises."""
    if not decision.inspects_response:
        return ResponseReview(None, body)
    document: Any = None
    parsed = False
    withheld: list[str] = []
    policies: set[str] = set()
    reviewed: dict[RecordFacts, bool] = {}
    basis = decision.basis
    # An empty body gives nothing away: there is nothing to check (a 204, a HEAD).
    if decision.reviews_record and 200 <= status < 300 and basis is not None and body:
        if not is_json_type(content_type):
            return ResponseReview(unreadable(decision, "the record's facts are needed but the answer is not JSON"), b"")
        try:
            document, parsed = load(body, exact=bool(decision.masks)), True
        except (UnicodeDecodeError, ValueError, RecursionError):  # RecursionError: nested too deep
            return ResponseReview(unreadable(decision, "the answer is not valid JSON"), b"")
        items = basis.facts.route.facts_items
        try:
            if items is None:
                record = record_facts(read_facts(basis.facts.route.response_facts, document), now)
                verdict, cached = decide_record(basis, record, now)
                reviewed[record] = verdict.allowed
                if not verdict.allowed:
                    refused = record_refusal(decision, verdict, cached)
                    return ResponseReview(refused, b"", reviewed=tuple(reviewed.items()), reviewed_at=int(now),
                                          subjects=_answer_subjects(decision, document))  # fmt: skip
            else:
                _review_items(basis, items, document, now, max_records, withheld, policies, reviewed)
        except FactError as exc:
            return ResponseReview(unreadable(decision, f"the record's facts cannot be read: {exc}"), b"")
    subjects: tuple[tuple[str, ...], ...] = ()
    if decision.reads_subjects and 200 <= status < 300 and body:
        if not parsed and is_json_type(content_type):
            # best effort: an answer that is not JSON names no one more than its request did
            with contextlib.suppress(UnicodeDecodeError, ValueError, RecursionError):
                document, parsed = load(body, exact=bool(decision.masks)), True
        if parsed:
            subjects = _answer_subjects(decision, document)  # before masking: the values the record held
    pointers: list[str] = list(withheld)
    if decision.masks and body:
        if not parsed:
            if not is_json_type(content_type):
                return ResponseReview(unreadable(decision, "the answer must be masked but is not JSON"), b"")
            try:
                document, parsed = load(body, exact=bool(decision.masks)), True
            except (UnicodeDecodeError, ValueError, RecursionError):  # RecursionError: nested too deep
                return ResponseReview(unreadable(decision, "the answer must be masked but is not valid JSON"), b"")
        document, masked = mask_document(document, decision.masks)
        pointers.extend(masked)
    seen = tuple(reviewed.items())
    if not pointers:
        return ResponseReview(None, body, reviewed=seen, reviewed_at=int(now), subjects=subjects)
    return ResponseReview(
        None, dump(document), tuple(pointers), tuple(withheld), tuple(sorted(policies)), seen, int(now), subjects
    )


def _answer_subjects(decision: Decision, document: Any) -> tuple[tuple[str, ...], ...]:
    basis = decision.basis
    if basis is None or not decision.reads_subjects:
        return ()
    return basis.facts.route.subjects.answer_groups(document)


def _review_items(
    basis: Basis,
    items: Pointer,
    document: Any,
    now: float,
    max_records: int,
    withheld: list[str],
    policies: set[str],
    reviewed: dict[RecordFacts, bool],
) -> None:
    """Decide every item of the array at ``items`` on its own facts; withhold (null) the refused ones."""
    route = basis.facts.route
    array = resolve(document, items.tokens)
    if not isinstance(array, list):
        raise FactError(f"the answer has no array at {items.text}")
    skip = len(items.tokens) + 1
    memo: dict[RecordFacts, Verdict] = {}
    base: Facts = basis.facts
    for index, item in enumerate(array):
        if item is None:
            continue  # nothing to show, nothing to check
        record = record_facts(read_facts(route.response_facts, item, skip), now)
        verdict = memo.get(record)
        if verdict is None:
            if len(memo) >= max_records:
                raise FactError(f"more than {max_records} distinct records in one answer")
            verdict, _ = basis.engine.decide(base.with_record(record, int(now)))
            memo[record] = verdict
            reviewed[record] = verdict.allowed
        if not verdict.allowed:
            array[index] = None
            withheld.append(f"{items.text}/{index}")
            policies.update(verdict.policy_ids)
