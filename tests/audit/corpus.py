"""A small random corpus of decisions, a brute-force reference for the audit filters, and a
Hypothesis strategy of filters: shared by the SQLite and ClickHouse query tests."""

from __future__ import annotations

import random

from hypothesis import strategies as st

from gateway.audit.query import AuditFilter
from gateway.audit.record import DecisionRecord
from gateway.audit.schema import time_to_us

from .helpers import make_record

CONTRACT_FIELDS = {"decision_id", "time", "decision", "status", "tenant", "principal", "roles", "action",
                   "resource_type", "resource_id", "purpose", "categories", "policies"}
PRINCIPALS = ("p-alice", "p-bob", "p-carol", "app-mail")
TENANTS = ("t-one", "t-two")
PURPOSES = ("essential.service", "essential.service.operations.support", "essential.services",
            "marketing.communications.email", "analytics.reporting", "")
CATEGORIES = ("user.contact.email", "user.contact", "user.contact-list", "user.financial.bank_account",
              "user.content.private.email.body", "system.operations")
POLICIES = ("support-read", "sales-export", "default-deny", "legal-read")
NOW = 1_800_000_000.0



def random_records(count: int, seed: int = 11) -> list[DecisionRecord]:
    rng = random.Random(seed)
    out = []
    for index in range(count):
        denied = rng.random() < 0.3
        out.append(make_record(
            time=NOW - rng.randrange(0, 20 * 86400) - rng.random(),
            principal_id=rng.choice(PRINCIPALS),
            tenant=rng.choice(TENANTS),
            purpose=rng.choice(PURPOSES),
            categories=tuple(rng.sample(CATEGORIES, rng.randrange(0, 3))),
            policies=tuple(rng.sample(POLICIES, rng.randrange(0, 3))),
            decision="deny" if denied else "allow",
            status=403 if denied else 200,
            resource_id=f"r-{index}",
        ))
    # a few records sharing one instant, to pin down the tie order
    for rec in out[:4]:
        rec.time = NOW - 3600.0
    # stored in another order than their ids were made, so that store order and id order differ
    rng.shuffle(out)
    return out


def in_tree(value: str, root: str) -> bool:
    return value == root or value.startswith(root + ".")


def brute_force(records: list[DecisionRecord], flt: AuditFilter) -> list[str]:
    def keep(rec: DecisionRecord) -> bool:
        t = time_to_us(rec.time)
        return (
            (flt.since_us is None or t >= flt.since_us)
            and (flt.until_us is None or t < flt.until_us)
            and (not flt.principal or rec.principal_id == flt.principal)
            and (not flt.tenant or rec.tenant == flt.tenant)
            and (not flt.decision or rec.decision == flt.decision)
            and (not flt.purpose or in_tree(rec.purpose, flt.purpose))
            and (not flt.category or any(in_tree(c, flt.category) for c in rec.categories))
            and (not flt.policy or flt.policy in rec.policies)
        )

    kept = sorted((r for r in records if keep(r)), key=lambda r: (time_to_us(r.time), r.decision_id), reverse=True)
    return [r.decision_id for r in kept[: flt.limit]]


filters = st.builds(
    AuditFilter,
    since_us=st.one_of(st.none(), st.integers(time_to_us(NOW - 21 * 86400), time_to_us(NOW))),
    until_us=st.one_of(st.none(), st.integers(time_to_us(NOW - 21 * 86400), time_to_us(NOW))),
    principal=st.one_of(st.none(), st.sampled_from(PRINCIPALS)),
    tenant=st.one_of(st.none(), st.sampled_from(TENANTS)),
    purpose=st.one_of(st.none(), st.sampled_from(["essential", "essential.service", "marketing", "analytics.reporting",
                                                  "essential.services", "nope"])),
    category=st.one_of(st.none(), st.sampled_from(["user", "user.contact", "user.contact.email", "user.content",
                                                   "system", "user.contact-list", "nope"])),
    decision=st.one_of(st.none(), st.sampled_from(["allow", "deny"])),
    policy=st.one_of(st.none(), st.sampled_from([*POLICIES, "nope"])),
    limit=st.integers(0, 150),
)
