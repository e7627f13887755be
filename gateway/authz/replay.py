"""Deciding a recorded request again: what an audit record keeps of a decision, and the replay.

A decision is a pure function of its ``Facts`` (and, once the upstream answered, of the record's facts
read from the answer). So the audit record keeps those inputs, and any policy set can decide the
request again: ``gateway policy replay`` against a candidate set, shadow mode against a candidate on
live traffic (in the audit writer thread, off the request's critical path).

What is kept (the record's ``inputs``, JSON, format ``v`` 1):

- the principal as the engine saw it: kind, id (oid or app id), tenant, roles, delegated scopes;
- the route id, the resource id, tenant and owner, the purpose, the recipient, the request time;
- the consent the request named, as the resolver found it (subject, grantee, message ids, purpose,
  expiry): ids and times, no content;
- the tenant's facts (recording enabled, the retention it configured for this kind of record);
- the record facts read from the answer (age in days, opt-out flag, the tenant a list row names),
  each distinct set once, with the time they were decided at;
- the outcome that was enforced: allowed, determining policies, the masking plan (pointers), and
  which reviewed records were refused.

Never a token, a body or a response. Request-body fields a route lifts (an e-mail address) are kept
only as keyed pseudonyms (HMAC-SHA256 with the gateway's pseudonym key, ``audit.pseudonym_key_file``),
and the tenant's opt-out list only as far as it bears on this request: the pseudonyms of the lifted
values that are on it. Equality and membership keep their meaning under the pseudonym, so a replay
decides as the live request did, and the store alone reveals no address. What a replay cannot do,
by design: a candidate policy that reads the text of a lifted value (``like "*@example.com"``) sees
the pseudonym; one that reads record facts the enforced set never asked for (so the answer was never
read for them) decides without them, and the replay says so (``partial``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gateway.audit.pseudonyms import Pseudonymise
from gateway.authz.decision import DEFAULT_DENY, FAIL_CLOSED, Decision
from gateway.authz.engine import PolicyEngine
from gateway.authz.facts import ConsentFacts, Facts, RecordFacts, TenantFacts
from gateway.authz.review import ResponseReview
from gateway.identity.principal import Principal

FORMAT = 1


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a decision came to, in a form two policy sets can be compared in."""

    allowed: bool
    policies: tuple[str, ...]  # determining policies, sorted (with the forbids that withheld list items)
    masks: tuple[str, ...]  # masking plan pointers, sorted ("" when refused)
    refused_records: tuple[bool, ...] = ()  # per reviewed record, in order: refused (withheld) or not

    def to_json(self) -> dict[str, Any]:
        return {"a": self.allowed, "pol": list(self.policies), "m": list(self.masks), "w": list(self.refused_records)}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Outcome:
        return cls(bool(doc["a"]), tuple(doc["pol"]), tuple(doc["m"]), tuple(bool(w) for w in doc.get("w", ())))


@dataclass(frozen=True, slots=True)
class Replayable:
    """One decision's inputs and enforced outcome, built on the request path from immutable parts
    (no serialisation there) and written by the audit writer (``encode``)."""

    facts: Facts  # the facts of the decision made before forwarding (no record facts)
    records: tuple[RecordFacts, ...]  # the distinct record facts reviewed, in order
    records_at: int  # the time they were decided at
    single: bool  # one record (a refusal refuses the answer) or list items (withheld one by one)
    outcome: Outcome


def capture(decision: Decision, review: ResponseReview | None = None) -> Replayable | None:
    """The replayable inputs of a decision made by the engine (None for refusals the policies did not
    make: bad input, unmapped routes, facts or an answer that could not be had or read, ...).
    ``review`` is the review of the upstream's answer, when there was one; ``decision`` is the
    decision it reviewed."""
    basis = decision.basis
    if basis is None or FAIL_CLOSED in decision.policy_ids:
        return None  # not decided by the policies: a fact or the answer could not be had
    if review is not None and review.refusal is not None and FAIL_CLOSED in review.refusal.policy_ids:
        return None
    facts = basis.facts  # the first decision's: its record facts are None
    single = facts.route.facts_items is None
    if decision.record_facts is not None:  # decided with facts fetched before forwarding
        outcome = Outcome(
            decision.allowed, tuple(sorted(decision.policy_ids)),
            tuple(sorted(decision.masked_pointers)) if decision.allowed else (), (not decision.allowed,),
        )  # fmt: skip
        return Replayable(facts, (decision.record_facts,), decision.record_time, True, outcome)
    if review is None or not review.reviewed:
        outcome = Outcome(
            decision.allowed, tuple(sorted(decision.policy_ids)),
            tuple(sorted(decision.masked_pointers)) if decision.allowed else (),
        )  # fmt: skip
        return Replayable(facts, (), 0, single, outcome)
    records = tuple(r for r, _ in review.reviewed)
    refused = tuple(not allowed for _, allowed in review.reviewed)
    if review.refusal is not None:
        outcome = Outcome(False, tuple(sorted(review.refusal.policy_ids)), (), refused)
    else:
        policies = tuple(sorted({*decision.policy_ids, *review.policies}))
        outcome = Outcome(True, policies, tuple(sorted(decision.masked_pointers)), refused)
    return Replayable(facts, records, review.reviewed_at, single, outcome)


# --- the record's JSON ------------------------------------------------------------------------------


class InputsEncoder:
    """``encode`` with caches: the parts of a record's inputs that repeat from request to request (who,
    which route and record, what for, the tenant's facts, the consent) are serialised once per distinct
    value, and the outcome once per distinct outcome; only the times and record facts are written
    each time. Used by the audit writer thread only (not thread-safe); bounded."""

    MAX_ENTRIES = 4096

    def __init__(self, pseudonym: Pseudonymise) -> None:
        self.pseudonym = pseudonym
        self._static: dict[tuple[object, ...], str] = {}
        self._outcomes: dict[Outcome, str] = {}

    def __call__(self, item: Replayable) -> str:
        f = item.facts
        p = f.principal
        key = (p.kind, p.id, p.tenant, p.roles, p.scopes, f.route.id, f.resource_id, f.tenant, f.owner, f.purpose,
               f.recipient, f.body, f.tenant_facts, f.consent)  # fmt: skip
        static = self._static.get(key)
        if static is None:
            static = self._static_json(f)
            if len(self._static) >= self.MAX_ENTRIES:
                self._static.clear()
            self._static[key] = static
        outcome = self._outcomes.get(item.outcome)
        if outcome is None:
            outcome = json.dumps(item.outcome.to_json(), separators=(",", ":"))
            if len(self._outcomes) >= self.MAX_ENTRIES:
                self._outcomes.clear()
            self._outcomes[item.outcome] = outcome
        parts = [static, ',"time":', str(int(f.time)), ',"out":', outcome]
        if item.records:
            parts.append(',"records":' + json.dumps([dict(r) for r in item.records], separators=(",", ":")))
            parts.append(f',"at":{int(item.records_at)},"single":{"true" if item.single else "false"}')
        parts.append("}")
        return "".join(parts)

    def _static_json(self, f: Facts) -> str:
        pseudonym = self.pseudonym
        principal = f.principal
        tenant = f.tenant_facts
        optouts = None
        if tenant.optouts is not None:
            optouts = sorted(pseudonym(v) for v in {value for _, value in f.body} if v in tenant.optouts)
        doc: dict[str, Any] = {
            "v": FORMAT,
            "p": {"k": principal.kind, "id": principal.id, "t": principal.tenant, "r": list(principal.roles),
                  "s": list(principal.scopes)},
            "route": f.route.id,
            "rid": f.resource_id,
            "tenant": f.tenant,
            "owner": f.owner,
            "purpose": f.purpose,
            "recipient": f.recipient,
            "body": [[name, pseudonym(value)] for name, value in f.body],
            "tf": {"known": tenant.known, "rec": tenant.call_recording_enabled, "opt": optouts,
                   "ret": tenant.retention_days},
        }  # fmt: skip
        if f.consent is not None:
            c = f.consent
            doc["consent"] = {
                "id": c.id, "subject": c.subject, "tenant": c.tenant, "grantee": c.grantee,
                "resources": sorted(c.resources), "purpose": c.purpose, "expires_at": c.expires_at,
            }  # fmt: skip
        text = json.dumps(doc, separators=(",", ":"))
        return text[:-1]  # without the closing brace: the per-request members follow


def encode(item: Replayable, pseudonym: Pseudonymise) -> str:
    """The record's ``inputs`` JSON of ``item`` (see the module docstring)."""
    return InputsEncoder(pseudonym)(item)


@dataclass(frozen=True, slots=True)
class Recorded:
    """A record's inputs read back: everything but the route, which the deciding engine supplies."""

    principal: Principal
    route_id: str
    resource_id: str
    tenant: str
    owner: str | None
    purpose: str
    recipient: str | None
    consent: ConsentFacts | None
    body: tuple[tuple[str, str], ...]
    tenant_facts: TenantFacts
    time: int
    records: tuple[RecordFacts, ...]
    records_at: int
    single: bool
    outcome: Outcome

    @classmethod
    def of(cls, item: Replayable) -> Recorded:
        """A live decision's inputs as they are (not pseudonymised: for shadow decisions in process)."""
        f = item.facts
        return cls(
            f.principal, f.route.id, f.resource_id, f.tenant, f.owner, f.purpose, f.recipient, f.consent, f.body,
            f.tenant_facts, f.time, item.records, item.records_at, item.single, item.outcome,
        )  # fmt: skip


def decode(text: str) -> Recorded:
    """A record's ``inputs`` back; ``ValueError`` when it is not a replayable record of a known format."""
    doc = json.loads(text)
    if not isinstance(doc, dict) or doc.get("v") != FORMAT:
        raise ValueError(f"unknown inputs format {doc.get('v') if isinstance(doc, dict) else '?'}")
    p = doc["p"]
    principal = Principal(
        kind=p["k"], id=p["id"], tenant=p["t"], roles=tuple(p["r"]), scopes=tuple(p["s"]), groups=None,
        client_id="", token_version="2.0", expires_at=0.0,
    )  # fmt: skip
    tf = doc["tf"]
    consent = None
    if doc.get("consent"):
        c = doc["consent"]
        consent = ConsentFacts(c["id"], c["subject"], c["tenant"], c["grantee"], frozenset(c["resources"]),
                               c["purpose"], int(c["expires_at"]))  # fmt: skip
    records = tuple(tuple(sorted((str(k), v) for k, v in r.items())) for r in doc.get("records", ()))
    return Recorded(
        principal=principal,
        route_id=doc["route"],
        resource_id=doc["rid"],
        tenant=doc["tenant"],
        owner=doc["owner"],
        purpose=doc["purpose"],
        recipient=doc["recipient"],
        consent=consent,
        body=tuple((str(n), str(v)) for n, v in doc["body"]),
        tenant_facts=TenantFacts(
            doc["tenant"], bool(tf["known"]), tf["rec"], frozenset(tf["opt"]) if tf["opt"] is not None else None,
            tf["ret"],
        ),
        time=int(doc["time"]),
        records=records,
        records_at=int(doc.get("at", 0)),
        single=bool(doc.get("single", True)),
        outcome=Outcome.from_json(doc["out"]),
    )


# --- deciding again ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Replayed:
    outcome: Outcome
    partial: bool  # the candidate reads record facts that were never read for this request


def replay(engine: PolicyEngine, recorded: Recorded) -> Replayed:
    """Decide the recorded request with ``engine``, as the gateway would have (both decisions)."""
    route = engine.routes.by_id.get(recorded.route_id)
    if route is None:  # the candidate's route maps no longer know the route: default deny
        return Replayed(Outcome(False, (DEFAULT_DENY,), ()), False)
    facts = Facts(
        recorded.principal, route, recorded.resource_id, recorded.tenant, recorded.owner, recorded.purpose,
        recorded.recipient, recorded.consent, recorded.body, recorded.tenant_facts, recorded.time,
    )  # fmt: skip
    verdict, _ = engine.decide(facts)
    if not verdict.allowed:
        return Replayed(Outcome(False, tuple(sorted(verdict.policy_ids)), ()), False)
    masks = tuple(sorted(m.pointer.text for m in verdict.masks))
    reads_record = bool(route.response_facts) and engine.reads_record(facts)
    if not reads_record:
        return Replayed(Outcome(True, tuple(sorted(verdict.policy_ids)), masks), False)
    if not recorded.records:
        return Replayed(Outcome(True, tuple(sorted(verdict.policy_ids)), masks), True)
    verdicts = [engine.decide(facts.with_record(r, recorded.records_at))[0] for r in recorded.records]
    refused = tuple(not v.allowed for v in verdicts)
    if recorded.single:
        second = verdicts[0]
        if not second.allowed:
            return Replayed(Outcome(False, tuple(sorted(second.policy_ids)), (), refused), False)
        return Replayed(Outcome(True, tuple(sorted(verdict.policy_ids)), masks, refused), False)
    withholding = {p for v in verdicts if not v.allowed for p in v.policy_ids}
    return Replayed(Outcome(True, tuple(sorted({*verdict.policy_ids, *withholding})), masks, refused), False)


@dataclass(frozen=True, slots=True)
class Change:
    """How a candidate's outcome differs from the enforced one (None from ``compare``: it does not)."""

    kind: str  # "allow->deny", "deny->allow" or "masks"
    old: Outcome
    new: Outcome
    masks_appearing: tuple[str, ...]  # masked before, shown now (and records no longer withheld)
    masks_disappearing: tuple[str, ...]  # shown before, masked now (and records newly withheld)


def compare(old: Outcome, new: Outcome) -> Change | None:
    if old.allowed and not new.allowed:
        return Change("allow->deny", old, new, (), ())
    if new.allowed and not old.allowed:
        return Change("deny->allow", old, new, (), ())
    if not old.allowed:
        return None
    shown = tuple(sorted(set(old.masks) - set(new.masks)))
    hidden = tuple(sorted(set(new.masks) - set(old.masks)))
    released = tuple(f"record {i}" for i, (o, n) in enumerate(zip(old.refused_records, new.refused_records,
                                                                     strict=False)) if o and not n)  # fmt: skip
    withheld = tuple(f"record {i}" for i, (o, n) in enumerate(zip(old.refused_records, new.refused_records,
                                                                     strict=False)) if n and not o)  # fmt: skip
    if shown or hidden or released or withheld:
        return Change("masks", old, new, shown + released, hidden + withheld)
    return None


def shadow_decider(engine: Callable[[], PolicyEngine | None]) -> Callable[[Replayable], tuple[str, tuple[str, ...]]]:
    """For shadow mode: decide a live request's inputs with the candidate set ``engine()`` returns
    ("" when there is none); run by the audit writer, never on the request path."""

    def decide(item: Replayable) -> tuple[str, tuple[str, ...]]:
        candidate = engine()
        if candidate is None:
            return "", ()
        outcome = replay(candidate, Recorded.of(item)).outcome
        return ("allow" if outcome.allowed else "deny"), outcome.policies

    return decide
