"""The facts one decision is made from: who, which route, what for, and what the resolvers said.

Everything here is immutable and hashable, so a ``Facts`` value (minus the request time, when no
policy reads it) is the decision-cache key.
"""

from __future__ import annotations

from dataclasses import dataclass

from adapters.routemap import Route
from gateway.identity.principal import Principal


@dataclass(frozen=True, slots=True)
class TenantFacts:
    """A tenant's settings as the resolvers found them. ``known`` is False when the tenant does not exist."""

    tenant: str
    known: bool = True
    call_recording_enabled: bool | None = None
    optouts: frozenset[str] | None = None  # lower-cased; None when the route did not need them

    def key(self) -> tuple[object, ...]:
        return (self.tenant, self.known, self.call_recording_enabled, self.optouts)


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
