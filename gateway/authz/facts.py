"""The facts one decision is made from: who, which route, what for, and what the resolvers said.

Everything here is immutable and hashable, so a ``Facts`` value (minus the request time, when no
policy reads it) is the decision-cache key.

``record`` holds facts about the record itself (``context.record``), read from the upstream's JSON by
the route map's ``response_facts``: None on the decision made before forwarding, set on the second
decision made once they are known. Ages are whole days, so records of the same age share a
decision.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.adapters.routemap import Route
from gateway.identity.principal import Principal


@dataclass(frozen=True, slots=True)
class TenantFacts:
    """A tenant's settings as the resolvers found them. ``known`` is False when the tenant does not exist."""

    tenant: str
    known: bool = True
    call_recording_enabled: bool | None = None
    optouts: frozenset[str] | None = None  # lower-cased; None when the route did not need them
    # the retention (days) the tenant configured for the route's kind of record; None: not configured,
    # or the route names no kind
    retention_days: int | None = None

    def key(self) -> tuple[object, ...]:
        return (self.tenant, self.known, self.call_recording_enabled, self.optouts, self.retention_days)


@dataclass(frozen=True, slots=True)
class ConsentFacts:
    """A consent record named by ``X-Consent-Ref``."""

    id: str
    subject: str
    tenant: str
    grantee: str
    resources: frozenset[str]
    purpose: str
    expires_at: int  # seconds since the epoch


#: ``context.record`` as sorted ``(name, value)`` pairs: ``age_days`` (int), ``marketing_opt_out`` (bool).
RecordFacts = tuple[tuple[str, int | bool | str], ...]


@dataclass(frozen=True, slots=True)
class Facts:
    principal: Principal
    route: Route
    resource_id: str
    tenant: str  # the resource's tenant
    owner: str | None  # oid of the resource's owner ("me" already resolved)
    purpose: str
    recipient: str | None
    consent: ConsentFacts | None
    body: tuple[tuple[str, str], ...]  # lifted request-body fields
    tenant_facts: TenantFacts
    time: int  # seconds since the epoch
    record: RecordFacts | None = None  # context.record: sorted (name, value) pairs

    def with_record(self, record: RecordFacts, time: int) -> Facts:
        """These facts once the record's are known, at ``time`` (``dataclasses.replace`` costs more)."""
        return Facts(
            self.principal,
            self.route,
            self.resource_id,
            self.tenant,
            self.owner,
            self.purpose,
            self.recipient,
            self.consent,
            self.body,
            self.tenant_facts,
            time,
            record,
        )
