"""The decision record: one per request, whatever the outcome. Never holds a token or a body."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class DecisionRecord:
    decision_id: str                     # UUIDv7, also sent as X-Decision-Id
    time: float                          # seconds since the epoch when the request arrived
    method: str                          # HTTP method
    path: str                            # normalised request path (no query string)
    trace_id: str = ""                   # 32 hex digits
    span_id: str = ""                    # 16 hex digits: the authz.decision span
    parent_span_id: str = ""             # the caller's span, from traceparent
    route: str = ""                      # route template, e.g. /tenants/{tid}/payments/{id}
    tenant: str = ""                     # tenant of the principal (tid)
    resource_tenant: str = ""            # tenant named by the route, if any
    principal_kind: str = ""             # user | app | "" (unauthenticated)
    principal_id: str = ""               # oid or app id
    client_id: str = ""
    roles: tuple[str, ...] = ()
    action: str = ""
    resource_type: str = ""
    resource_id: str = ""
    categories: tuple[str, ...] = ()     # data categories of the resource
    purpose: str = ""
    recipient: str = ""
    consent_ref: str = ""
    decision: str = "deny"               # allow | deny
    reason: str = ""                     # short code: ok, policy, default_deny, unmapped, missing_token, ...
    policies: tuple[str, ...] = ()       # determining policy ids
    clauses: tuple[str, ...] = ()        # "source: clause" of each determining policy, same order
    masked_fields: tuple[str, ...] = ()  # JSON pointers masked in the response
    policy_hash: str = ""                # hash of the policy set and schema in force
    status: int = 0                      # HTTP status sent to the client
    decision_us: int = 0                 # time spent authenticating and deciding, microseconds
    upstream_ms: float = 0.0             # time to upstream response headers
    gateway_id: str = ""                 # which gateway process wrote it
    sequence: int = 0                    # per-gateway number, assigned by AuditLog.record (gaps = loss)
    duration_us: int = 0                 # arrival to response ready (0 = unknown: decision_us is used)
    extra: dict[str, str] = field(default_factory=dict)
    # What the decision was made from, to decide it again (gateway/authz/replay.py): set on the request
    # path as an immutable object, turned into ``inputs`` (JSON) by the audit writer thread.
    replay: Any = field(default=None, repr=False, compare=False)
    inputs: str = ""                     # "" when the policies did not decide (401, 400, unmapped, ...)
    shadow_decision: str = ""            # allow | deny under policies.shadow_dir; "" = no shadow set
    shadow_policies: tuple[str, ...] = ()
    # Whose data the request touched: groups of ``kind:value`` keys, one group per data subject (e-mail
    # addresses as keyed pseudonyms); set by the audit writer, stored as terms and in extra["subjects"].
    subjects: tuple[tuple[str, ...], ...] = ()
