"""The ``authz.decision`` span of a stored record: ids, times and attributes (table in README.md).

Spans are built from the store by the outbox exporter, never by the SDK's tracer, so no sampler
and no in-memory batch queue can drop them. Attribute names follow the OpenTelemetry semantic
conventions where one exists and the ``privacy.*`` / ``gateway.*`` namespaces elsewhere. Empty
strings and empty lists are left out (a missing key reads as "" in ClickHouse's attribute map).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, TraceFlags
from opentelemetry.trace.status import Status, StatusCode
from opentelemetry.util.types import AttributeValue

from gateway.audit.record import DecisionRecord

SPAN_NAME = "authz.decision"
SCOPE = InstrumentationScope("gateway.audit", "1")
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)

# OpenTelemetry semantic conventions.
ENDUSER_ID = "enduser.id"
USER_ROLES = "user.roles"
HTTP_REQUEST_METHOD = "http.request.method"
URL_PATH = "url.path"
HTTP_ROUTE = "http.route"
HTTP_RESPONSE_STATUS_CODE = "http.response.status_code"
ERROR_TYPE = "error.type"
# The project's namespaces.
DECISION_ID = "privacy.decision.id"
DECISION_OUTCOME = "privacy.decision.outcome"
DECISION_REASON = "privacy.decision.reason"
PURPOSE = "privacy.purpose"
DATA_CATEGORIES = "privacy.data_categories"
RECIPIENT = "privacy.recipient"
CONSENT_REF = "privacy.consent.ref"
POLICY_IDS = "privacy.policy.ids"
POLICY_CLAUSES = "privacy.policy.clauses"
POLICY_SET_HASH = "privacy.policy.set_hash"
MASKED_FIELDS = "privacy.masked_fields"
SHADOW_OUTCOME = "privacy.shadow.outcome"
SHADOW_POLICY_IDS = "privacy.shadow.policy.ids"
ACTION = "privacy.action"
RESOURCE_TYPE = "privacy.resource.type"
RESOURCE_ID = "privacy.resource.id"
RESOURCE_TENANT = "privacy.resource.tenant"
PRINCIPAL_KIND = "privacy.principal.kind"
PRINCIPAL_TENANT = "privacy.principal.tenant"
PRINCIPAL_CLIENT_ID = "privacy.principal.client_id"
GATEWAY_ID = "gateway.id"
GATEWAY_SEQUENCE = "gateway.sequence"
DECISION_DURATION_US = "gateway.decision.duration_us"
UPSTREAM_DURATION_MS = "gateway.upstream.duration_ms"
EXTRA_PREFIX = "gateway.extra."

_STRING_ATTRIBUTES: tuple[tuple[str, str], ...] = (
    ("decision_id", DECISION_ID),
    ("decision", DECISION_OUTCOME),
    ("reason", DECISION_REASON),
    ("principal_id", ENDUSER_ID),
    ("principal_kind", PRINCIPAL_KIND),
    ("tenant", PRINCIPAL_TENANT),
    ("client_id", PRINCIPAL_CLIENT_ID),
    ("method", HTTP_REQUEST_METHOD),
    ("path", URL_PATH),
    ("route", HTTP_ROUTE),
    ("action", ACTION),
    ("resource_type", RESOURCE_TYPE),
    ("resource_id", RESOURCE_ID),
    ("resource_tenant", RESOURCE_TENANT),
    ("purpose", PURPOSE),
    ("recipient", RECIPIENT),
    ("consent_ref", CONSENT_REF),
    ("policy_hash", POLICY_SET_HASH),
    ("gateway_id", GATEWAY_ID),
    ("shadow_decision", SHADOW_OUTCOME),
)
_LIST_ATTRIBUTES: tuple[tuple[str, str], ...] = (
    ("roles", USER_ROLES),
    ("categories", DATA_CATEGORIES),
    ("policies", POLICY_IDS),
    ("clauses", POLICY_CLAUSES),
    ("masked_fields", MASKED_FIELDS),
    ("shadow_policies", SHADOW_POLICY_IDS),
)


def span_attributes(rec: DecisionRecord) -> dict[str, AttributeValue]:
    attributes: dict[str, AttributeValue] = {}
    for field_name, key in _STRING_ATTRIBUTES:
        value = getattr(rec, field_name)
        if value:
            attributes[key] = value
    for field_name, key in _LIST_ATTRIBUTES:
        values = getattr(rec, field_name)
        if values:
            attributes[key] = tuple(values)
    attributes[HTTP_RESPONSE_STATUS_CODE] = rec.status
    attributes[GATEWAY_SEQUENCE] = rec.sequence
    attributes[DECISION_DURATION_US] = rec.decision_us
    if rec.upstream_ms:
        attributes[UPSTREAM_DURATION_MS] = rec.upstream_ms
    if rec.status >= 500:
        attributes[ERROR_TYPE] = rec.reason or str(rec.status)
    for key, value in rec.extra.items():
        attributes[EXTRA_PREFIX + key] = str(value)
    return attributes


def span_resource(service_name: str, gateway_id: str) -> Resource:
    return Resource.create({"service.name": service_name, "service.instance.id": gateway_id})


CHECKPOINT_EVENT = "audit.checkpoint"
PURGE_SPAN = "audit.purge"
CHECKPOINT_SPAN = "audit.checkpoint"
CHECKPOINT_KIND = "gateway.audit.checkpoint.kind"
CHECKPOINT_HASH = "gateway.audit.chain.hash"
CHECKPOINT_JWS = "gateway.audit.checkpoint.jws"
CHECKPOINT_JWK = "gateway.audit.checkpoint.jwk"


def checkpoint_attributes(row: Any, jwk: dict[str, Any]) -> dict[str, AttributeValue]:
    """A checkpoint's attributes: the signed JWS (the evidence) and the public JWK that verifies it."""
    return {
        CHECKPOINT_KIND: str(row["kind"]),
        GATEWAY_ID: str(row["gateway_id"]),
        GATEWAY_SEQUENCE: int(row["seq"]),
        DECISION_ID: str(row["decision_id"]),
        CHECKPOINT_HASH: str(row["hash"]),
        CHECKPOINT_JWS: str(row["jws"]),
        CHECKPOINT_JWK: json.dumps(jwk, sort_keys=True),
    }


def checkpoint_event(row: Any, jwk: dict[str, Any]) -> Event:
    return Event(CHECKPOINT_EVENT, checkpoint_attributes(row, jwk), timestamp=int(row["time_us"]) * 1000)


def checkpoint_span(row: Any, jwk: dict[str, Any], resource: Resource) -> ReadableSpan:
    """A purge marker, or a checkpoint signed after its head record was written (at close), as a span of
    its own; ids derived from the JWS, so a re-sent one has the same ids."""
    digest = hashlib.sha256(str(row["jws"]).encode()).digest()
    trace_id = int.from_bytes(digest[:16], "big") or 1
    span_id = int.from_bytes(digest[16:24], "big") or 1
    when = int(row["time_us"]) * 1000
    return ReadableSpan(
        name=PURGE_SPAN if row["kind"] == "purge" else CHECKPOINT_SPAN,
        context=SpanContext(trace_id, span_id, is_remote=False, trace_flags=_SAMPLED),
        resource=resource,
        attributes=checkpoint_attributes(row, jwk),
        kind=SpanKind.INTERNAL,
        start_time=when,
        end_time=when,
        instrumentation_scope=SCOPE,
    )


def build_span(rec: DecisionRecord, resource: Resource, events: Sequence[Event] = ()) -> ReadableSpan:
    """The span of ``rec``: its own trace/span ids, the caller's span as parent, always sampled.

    Server kind: it stands for the gateway's handling of the caller's request, and the upstream's
    spans are its children (the gateway sends this span id in ``traceparent``). Status is ERROR
    only for 5xx, as the HTTP server conventions say; a denial is an outcome, not an error.
    """
    trace_id = int(rec.trace_id, 16)
    context = SpanContext(trace_id, int(rec.span_id, 16), is_remote=False, trace_flags=_SAMPLED)
    parent = (
        SpanContext(trace_id, int(rec.parent_span_id, 16), is_remote=True, trace_flags=_SAMPLED)
        if rec.parent_span_id
        else None
    )
    start_ns = round(rec.time * 1_000_000) * 1000
    duration_us = rec.duration_us or rec.decision_us
    status = Status(StatusCode.ERROR, rec.reason) if rec.status >= 500 else Status(StatusCode.UNSET)
    return ReadableSpan(
        name=SPAN_NAME,
        context=context,
        parent=parent,
        resource=resource,
        attributes=span_attributes(rec),
        kind=SpanKind.SERVER,
        status=status,
        start_time=start_ns,
        end_time=start_ns + duration_us * 1000,
        instrumentation_scope=SCOPE,
        events=events,
    )
