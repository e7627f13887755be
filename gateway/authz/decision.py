"""What the authorizer answers: a decision with its reasons, and the masking plan for the response."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from gateway.adapters.routemap import MaskStyle, Pointer
from gateway.authz.facts import Facts, RecordFacts

DEFAULT_DENY = "default-deny"
FAIL_CLOSED = "fail-closed"
GATEWAY_SOURCE = "gateway"


def default_deny_reason() -> dict[str, str]:
    return {
        "policy": DEFAULT_DENY,
        "source": "Cedar default deny",
        "clause": "No policy permits this request.",
    }


def fail_closed_reason(clause: str) -> dict[str, str]:
    return {"policy": FAIL_CLOSED, "source": GATEWAY_SOURCE, "clause": clause}


@dataclass(frozen=True, slots=True)
class MaskRule:
    """Mask the response field(s) at ``pointer`` (``*`` = every array item) in ``style``."""

    pointer: Pointer
    category: str
    style: MaskStyle
    policies: tuple[str, ...]  # the forbidding policies, or ("default-deny",)


@dataclass(frozen=True, slots=True)
class Verdict:
    """The cacheable part of a decision: the same facts always give the same verdict."""

    allowed: bool
    status: int  # 200, 400 or 403
    reason: str  # short code: ok, policy, default_deny, missing_purpose, ...
    detail: str  # human text for the problem document
    policy_ids: tuple[str, ...] = ()
    reasons: tuple[dict[str, str], ...] = ()
    masks: tuple[MaskRule, ...] = ()


class Decider(Protocol):
    """What a decision keeps of the ``PolicyEngine`` that made it (named here, not imported: the engine
    builds decisions, so this module cannot depend on it)."""

    def decide(self, facts: Facts) -> tuple[Verdict, bool]: ...


@dataclass(frozen=True, slots=True)
class Basis:
    """What a decision was made from: the policy bundle and the facts (for deciding again once the
    upstream's answer tells more about the record)."""

    engine: Decider
    facts: Facts


@dataclass(frozen=True, slots=True)
class Decision:
    """One request's decision, with what the audit record and the problem document need.

    ``reasons`` is the contract's list of ``{"policy", "source", "clause"}``: the determining policies
    (the permits of an allow, the forbids of a deny), or one ``default-deny`` reason when nothing
    permitted, or one ``fail-closed`` reason when a fact or the evaluation failed.

    ``reviews_record``: the route reads facts about the record from the upstream's answer and some
    policy looks at them, so the answer must be checked (``Authorizer.review_response``) before it is
    passed on. ``inspects_response`` says whether the request path must buffer the JSON answer at all.
    """

    allowed: bool
    status: int
    reason: str
    detail: str
    policy_ids: tuple[str, ...]
    reasons: list[dict[str, str]]
    masks: tuple[MaskRule, ...] = ()
    action: str = ""
    resource_type: str = ""
    resource_id: str = ""
    resource_tenant: str = ""
    route: str = ""  # the route template
    route_id: str = ""
    categories: tuple[str, ...] = ()
    purpose: str = ""
    recipient: str = ""
    consent_ref: str = ""
    policy_hash: str = ""
    cached: bool = False
    extra: dict[str, str] = field(default_factory=dict)
    reviews_record: bool = False
    basis: Basis | None = field(default=None, repr=False, compare=False)
    # the record's facts fetched before forwarding (a ``facts_from`` route) and the time they were
    # decided at; the decision is the one made with them
    record_facts: RecordFacts | None = None
    record_time: int = 0
    # the data subjects the request itself names (path, lifted body: ``kind:value`` keys), and whether
    # the route reads more of them from the answer (gateway/adapters/subjects.py)
    subjects: tuple[str, ...] = ()
    reads_subjects: bool = False

    @property
    def inspects_response(self) -> bool:
        """True when the upstream's answer must be buffered and given to ``review_response``: the
        decision masks fields, or the record's facts in the answer are still to be checked."""
        return self.allowed and (bool(self.masks) or self.reviews_record or self.reads_subjects)

    @property
    def clauses(self) -> tuple[str, ...]:
        return tuple(f"{r['source']}: {r['clause']}" for r in self.reasons)

    @property
    def masked_pointers(self) -> tuple[str, ...]:
        """The masking plan's pointers (with ``*``), for explanations; the response lists concrete ones."""
        return tuple(m.pointer.text for m in self.masks)
