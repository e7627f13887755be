"""The reference internal services (contract section 6) as one Starlette app.

Fixture responses are serialised once when the app is created, so a GET handler is a dictionary
look-up and a ``Response`` around precomputed bytes. Only the POST routes, the Gmail mailboxes
(generated on first use, kept in a bounded LRU cache) and the consent records do work per request.

The Gmail routes answer as Gmail does, so that Google's own client library can be pointed at them
(through the gateway): ``users.messages.get`` serves ``format`` ``full`` (the default), ``metadata``
(no body; only the headers named by repeated ``metadataHeaders``, case-insensitively, when any are),
``minimal`` (no payload) and ``raw`` (the RFC 5322 message, base64url, in ``raw``; no payload); an
unknown ``format`` is a 400. ``users.messages.send`` takes ``{"raw": ...}`` on
``/gmail/v1/users/{userId}/messages/send`` and the message itself on the upload path
``/upload/gmail/v1/users/{userId}/messages/send`` with ``uploadType=media`` (a ``message/rfc822``
body) or ``uploadType=multipart`` (``multipart/related``: JSON metadata, then the message), which is
what the client library sends for a ``media_body``; the resumable protocol is not served (400).
Errors stay problem+json, like every error of these services.

Size: the reference services of CONTRACT.md section 6 are one Starlette app with one route table;
the handlers are short and alike, and reading them together is how one checks them against the
contract.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import Message
from email.parser import BytesHeaderParser, BytesParser
from email.policy import default as default_email_policy
from http import HTTPStatus
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.demo.fixtures import (
    JSONObject,
    TenantFixtures,
    fixture_instant,
    gmail_raw,
    load_fixtures,
    mailbox,
    rfc3339,
)

JSON_TYPE = "application/json"
PROBLEM_TYPE = "application/problem+json"

MAX_JSON_BODY = 64 * 1024
MAX_SEND_BODY = 8 * 1024 * 1024
MAX_CONSENTS = 100_000
MAILBOX_CACHE_SIZE = 1024
MAX_CONSENT_RESOURCES = 100
MAX_FIELD_LENGTH = 256

EMAIL_PATTERN = re.compile(r"[^@\s]{1,64}@[^@\s]+\.[^@\s]+")
RECIPIENT_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
PURPOSE_PATTERN = re.compile(r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*")
RFC3339_PATTERN = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})")
BASE64URL_PATTERN = re.compile(r"[A-Za-z0-9_-]+={0,2}")

Handler = Callable[[Request], Awaitable[Response]]


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def json_response(body: bytes, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(body, status_code=status, media_type=JSON_TYPE, headers=headers)


def problem(status: int, detail: str, headers: dict[str, str] | None = None) -> Response:
    """An RFC 9457 problem document: every error of these services is one."""
    body = {"type": "about:blank", "title": HTTPStatus(status).phrase, "status": status, "detail": detail}
    return Response(_json_bytes(body), status_code=status, media_type=PROBLEM_TYPE, headers=headers)


class ProblemError(Exception):
    """Raised by the request helpers; the handlers turn it into a problem response."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


@dataclass(frozen=True, slots=True)
class TenantCatalog:
    """One tenant's fixtures with every GET body serialised in advance."""

    fixtures: TenantFixtures
    name: str
    settings: bytes
    optouts: bytes
    optout_set: frozenset[str]
    contacts: bytes
    contact: dict[str, bytes]
    contact_record: dict[str, JSONObject]
    payments: bytes
    payment: dict[str, bytes]
    calls: bytes
    call: dict[str, bytes]
    recording: dict[str, bytes]
    transcript: dict[str, bytes]
    surveys: bytes
    survey_ids: frozenset[str]
    responses: dict[str, bytes]
    results: dict[str, bytes]
    events: bytes

    @classmethod
    def build(cls, fixtures: TenantFixtures) -> TenantCatalog:
        tenant_id = fixtures.settings["id"]
        by_id = {contact["id"]: contact for contact in fixtures.contacts}
        payment_ids = [{"id": p["id"]} for p in fixtures.payments]
        responses = fixtures.responses.items()
        return cls(
            fixtures=fixtures,
            name=fixtures.settings["name"],
            settings=_json_bytes(fixtures.settings),
            optouts=_json_bytes({"tenant": tenant_id, "emails": list(fixtures.optouts)}),
            optout_set=frozenset(email.casefold() for email in fixtures.optouts),
            contacts=_json_bytes({"tenant": tenant_id, "contacts": list(fixtures.contacts)}),
            contact={cid: _json_bytes(contact) for cid, contact in by_id.items()},
            contact_record=by_id,
            payments=_json_bytes({"tenant": tenant_id, "payments": payment_ids}),
            payment={p["id"]: _json_bytes(p) for p in fixtures.payments},
            calls=_json_bytes({"tenant": tenant_id, "calls": list(fixtures.calls)}),
            call={c["id"]: _json_bytes(c) for c in fixtures.calls},
            recording=dict(fixtures.recordings),
            transcript={cid: _json_bytes(t) for cid, t in fixtures.transcripts.items()},
            surveys=_json_bytes({"tenant": tenant_id, "surveys": list(fixtures.surveys)}),
            survey_ids=frozenset(s["id"] for s in fixtures.surveys),
            responses={sid: _json_bytes({"survey_id": sid, "responses": list(rs)}) for sid, rs in responses},
            results={sid: _json_bytes(r) for sid, r in fixtures.results.items()},
            events=_json_bytes({"tenant": tenant_id, "events": list(fixtures.events)}),
        )

    @property
    def recording_enabled(self) -> bool:
        return bool(self.fixtures.settings["call_recording_enabled"])


@dataclass(frozen=True, slots=True)
class MailboxCatalog:
    listing: bytes
    messages: dict[str, bytes]  # format=full, serialised once
    records: dict[str, JSONObject]  # the same messages, for the other formats


def build_mailbox(tenant_id: str, user_id: str, now: datetime | None = None) -> MailboxCatalog:
    messages = mailbox(tenant_id, user_id, now)
    listing = {
        "messages": [{"id": m["id"], "threadId": m["threadId"]} for m in messages],
        "resultSizeEstimate": len(messages),
    }
    return MailboxCatalog(
        _json_bytes(listing), {m["id"]: _json_bytes(m) for m in messages}, {m["id"]: m for m in messages}
    )


GMAIL_FORMATS = frozenset({"full", "metadata", "minimal", "raw"})
# Members every format carries (Gmail's ``minimal``): ids, labels, snippet, sizes, dates.
_MINIMAL_MEMBERS = ("id", "threadId", "labelIds", "snippet", "sizeEstimate", "historyId", "internalDate")
MAX_METADATA_HEADERS = 64


def gmail_format(message: JSONObject, form: str, metadata_headers: list[str]) -> JSONObject:
    """A ``users.messages`` resource in one of Gmail's formats other than ``full``."""
    shaped: JSONObject = {name: message[name] for name in _MINIMAL_MEMBERS if name in message}
    if form == "raw":
        shaped["raw"] = base64.urlsafe_b64encode(gmail_raw(message)).decode("ascii")
    elif form == "metadata":
        payload = message["payload"]
        wanted = {name.lower() for name in metadata_headers}
        headers = [h for h in payload["headers"] if not wanted or h["name"].lower() in wanted]
        shaped["payload"] = {
            "partId": payload["partId"], "mimeType": payload["mimeType"], "filename": payload["filename"],
            "headers": headers,
        }  # fmt: skip
    return shaped


def _decode_base64url(value: str) -> bytes:
    stripped = value.rstrip("=")
    return base64.urlsafe_b64decode(stripped + "=" * (-len(stripped) % 4))


class ConsentStore:
    """Consent records in memory, bounded: when full, expired records go first, then creation is refused.

    Expired consents are kept until space is needed, so a caller can still read one and the gateway
    can be shown refusing it; lost on restart by design (a reference service, not a system of record).
    """

    def __init__(self, max_records: int = MAX_CONSENTS) -> None:
        self.max_records = max_records
        self._bodies: dict[str, bytes] = {}
        self._expiry: dict[str, datetime] = {}

    def __len__(self) -> int:
        return len(self._bodies)

    def add(self, record: JSONObject, expires: datetime) -> bool:
        if len(self._bodies) >= self.max_records:
            self._drop_expired()
            if len(self._bodies) >= self.max_records:
                return False
        self._bodies[record["id"]] = _json_bytes(record)
        self._expiry[record["id"]] = expires
        return True

    def body(self, consent_id: str) -> bytes | None:
        return self._bodies.get(consent_id)

    def _drop_expired(self) -> None:
        now = datetime.now(UTC)
        for consent_id in [cid for cid, expires in self._expiry.items() if expires <= now]:
            del self._bodies[consent_id]
            del self._expiry[consent_id]


def _header(request: Request, name: str) -> str | None:
    value = request.headers.get(name)
    if value is None or not value.strip():
        return None
    return value.strip()


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ProblemError(413, f"request body larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ProblemError(413, f"request body larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json_object(request: Request, limit: int = MAX_JSON_BODY) -> JSONObject:
    body = await read_body(request, limit)
    try:
        value = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        raise ProblemError(400, "request body is not valid JSON") from None
    if not isinstance(value, dict):
        raise ProblemError(400, "request body must be a JSON object")
    return value


def _short_string(body: JSONObject, key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ProblemError(400, f"'{key}' must be a non-empty string")
    if len(value) > MAX_FIELD_LENGTH or not value.isprintable():
        raise ProblemError(400, f"'{key}' must be at most {MAX_FIELD_LENGTH} printable characters")
    return value


def parse_expiry(value: Any) -> datetime:
    if not isinstance(value, str) or not RFC3339_PATTERN.fullmatch(value):
        raise ProblemError(400, "'expires_at' must be an RFC 3339 date-time with a time zone offset")
    try:
        return datetime.fromisoformat(value.upper().replace("Z", "+00:00")).astimezone(UTC)
    except ValueError:
        raise ProblemError(400, "'expires_at' is not a valid date-time") from None


def _related_message(content_type: str, body: bytes) -> bytes:
    """The message part of a ``multipart/related`` upload: a JSON metadata part, then the message."""
    if not content_type.lower().startswith("multipart/related") or "\r" in content_type or "\n" in content_type:
        raise ProblemError(400, "uploadType=multipart needs a multipart/related body")
    document = BytesParser(policy=default_email_policy).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body
    )
    parts = list(document.iter_parts()) if document.is_multipart() else []
    if len(parts) != 2 or parts[0].get_content_type() != "application/json":
        raise ProblemError(400, "a multipart upload has two parts: the JSON metadata, then the message")
    try:
        metadata = json.loads(_part_bytes(parts[0]) or b"{}")
    except ValueError:
        raise ProblemError(400, "the metadata part is not valid JSON") from None
    if not isinstance(metadata, dict):
        raise ProblemError(400, "the metadata part must be a JSON object")
    return _part_bytes(parts[1])


def _part_bytes(part: Message) -> bytes:
    if part.get_content_type() == "message/rfc822":  # parsed as a nested message: serialise it again
        inner = part.get_payload(0)
        return inner.as_bytes() if isinstance(inner, Message) else b""
    payload = part.get_payload(decode=True)
    return payload if isinstance(payload, bytes) else b""


def guarded(handler: Handler) -> Handler:
    @functools.wraps(handler)
    async def run(request: Request) -> Response:
        try:
            return await handler(request)
        except ProblemError as error:
            return problem(error.status, error.detail)

    return run


class ReferenceServices:
    """The route handlers, bound to one app instance's fixtures, mailboxes and consents."""

    def __init__(self, now: datetime | None = None) -> None:
        #: the instant the fixture records are stamped from: each is a fixed age before it
        self.now = fixture_instant(now)
        self.tenants = {tid: TenantCatalog.build(f) for tid, f in load_fixtures(self.now).items()}
        self.tenant_list = _json_bytes({"tenants": [t.fixtures.settings for t in self.tenants.values()]})
        self.consents = ConsentStore()
        self.mailbox = functools.lru_cache(maxsize=MAILBOX_CACHE_SIZE)(self._build_mailbox)

    def _build_mailbox(self, tenant_id: str, user_id: str) -> MailboxCatalog:
        return build_mailbox(tenant_id, user_id, self.now)

    # --- helpers ----------------------------------------------------------------------------------

    def tenant(self, request: Request) -> TenantCatalog:
        tenant_id = request.path_params["tid"]
        catalog = self.tenants.get(tenant_id)
        if catalog is None:
            raise ProblemError(404, f"unknown tenant '{tenant_id}'")
        return catalog

    def caller_tenant(self, request: Request) -> str:
        tenant_id = _header(request, "x-gateway-tenant")
        if tenant_id is None:
            raise ProblemError(400, "X-Gateway-Tenant is required: these services sit behind the gateway")
        if tenant_id.lower() not in self.tenants:
            raise ProblemError(404, f"unknown tenant '{tenant_id}'")
        return tenant_id.lower()

    def mail_user(self, request: Request) -> str:
        user_id: str = request.path_params["user_id"]
        if user_id == "me":
            principal = _header(request, "x-gateway-principal")
            if principal is None:
                raise ProblemError(400, "userId 'me' needs X-Gateway-Principal to name the caller")
            user_id = principal
        if len(user_id) > MAX_FIELD_LENGTH:
            raise ProblemError(400, "userId too long")
        return user_id

    def user_mailbox(self, request: Request) -> MailboxCatalog:
        tenant_id = self.caller_tenant(request)
        return self.mailbox(tenant_id, self.mail_user(request))

    @staticmethod
    def item(table: dict[str, bytes], request: Request, kind: str, tenant: TenantCatalog) -> bytes:
        item_id = request.path_params["id"]
        body = table.get(item_id)
        if body is None:
            raise ProblemError(404, f"{kind} '{item_id}' not found in tenant {tenant.name}")
        return body

    # --- tenants ----------------------------------------------------------------------------------

    async def healthz(self, request: Request) -> Response:
        return json_response(b'{"status":"ok"}')

    async def list_tenants(self, request: Request) -> Response:
        return json_response(self.tenant_list)

    async def get_tenant(self, request: Request) -> Response:
        return json_response(self.tenant(request).settings)

    async def optouts(self, request: Request) -> Response:
        return json_response(self.tenant(request).optouts)

    # --- contacts ---------------------------------------------------------------------------------

    async def list_contacts(self, request: Request) -> Response:
        return json_response(self.tenant(request).contacts)

    async def get_contact(self, request: Request) -> Response:
        tenant = self.tenant(request)
        return json_response(self.item(tenant.contact, request, "contact", tenant))

    async def export_contact(self, request: Request) -> Response:
        tenant = self.tenant(request)
        contact_id = request.path_params["id"]
        contact = tenant.contact_record.get(contact_id)
        if contact is None:
            raise ProblemError(404, f"contact '{contact_id}' not found in tenant {tenant.name}")
        recipient = (_header(request, "x-recipient") or "").lower()
        if not recipient:
            raise ProblemError(400, "X-Recipient is required: it names the receiving party")
        if not RECIPIENT_PATTERN.fullmatch(recipient):
            raise ProblemError(400, "X-Recipient must be a lower-case identifier such as 'salesforce'")
        exported = {
            "tenant": tenant.fixtures.settings["id"],
            "contact_id": contact_id,
            "recipient": recipient,
            "fields": [key for key in contact if key != "id"],
            "record": contact,
            "requested_by": _header(request, "x-gateway-principal"),
            "purpose": _header(request, "x-gateway-purpose"),
            "decision_id": _header(request, "x-gateway-decision-id"),
        }
        return json_response(_json_bytes(exported))

    # --- payments ---------------------------------------------------------------------------------

    async def list_payments(self, request: Request) -> Response:
        return json_response(self.tenant(request).payments)

    async def get_payment(self, request: Request) -> Response:
        tenant = self.tenant(request)
        return json_response(self.item(tenant.payment, request, "payment", tenant))

    # --- calls ------------------------------------------------------------------------------------

    async def list_calls(self, request: Request) -> Response:
        return json_response(self.tenant(request).calls)

    async def get_call(self, request: Request) -> Response:
        tenant = self.tenant(request)
        return json_response(self.item(tenant.call, request, "call", tenant))

    def recorded_call(self, request: Request, tenant: TenantCatalog, what: str) -> str:
        call_id: str = request.path_params["id"]
        if call_id not in tenant.call:
            raise ProblemError(404, f"call '{call_id}' not found in tenant {tenant.name}")
        if not tenant.recording_enabled:
            raise ProblemError(
                404, f"tenant {tenant.name} has call recording disabled: no recording or transcript is stored"
            )
        if call_id not in tenant.recording:
            raise ProblemError(404, f"call '{call_id}' was not recorded, so it has no {what}")
        return call_id

    async def get_recording(self, request: Request) -> Response:
        tenant = self.tenant(request)
        call_id = self.recorded_call(request, tenant, "recording")
        return Response(tenant.recording[call_id], media_type="audio/wav")

    async def get_transcript(self, request: Request) -> Response:
        tenant = self.tenant(request)
        call_id = self.recorded_call(request, tenant, "transcript")
        return json_response(tenant.transcript[call_id])

    # --- surveys ----------------------------------------------------------------------------------

    async def list_surveys(self, request: Request) -> Response:
        return json_response(self.tenant(request).surveys)

    async def survey_responses(self, request: Request) -> Response:
        tenant = self.tenant(request)
        return json_response(self.item(tenant.responses, request, "survey", tenant))

    async def survey_results(self, request: Request) -> Response:
        tenant = self.tenant(request)
        return json_response(self.item(tenant.results, request, "survey", tenant))

    async def invite(self, request: Request) -> Response:
        tenant = self.tenant(request)
        survey_id = request.path_params["id"]
        if survey_id not in tenant.survey_ids:
            raise ProblemError(404, f"survey '{survey_id}' not found in tenant {tenant.name}")
        body = await read_json_object(request)
        email = body.get("email")
        if not isinstance(email, str) or len(email) > 254 or not EMAIL_PATTERN.fullmatch(email):
            raise ProblemError(400, "'email' must be an e-mail address")
        if set(body) != {"email"}:
            raise ProblemError(400, "an invitation has exactly one member, 'email'")
        if email.casefold() in tenant.optout_set:
            raise ProblemError(409, f"{email} is on the opt-out list of tenant {tenant.name}: not invited")
        answer = {"survey_id": survey_id, "email": email, "status": "queued"}
        return json_response(_json_bytes(answer), status=202)

    # --- analytics --------------------------------------------------------------------------------

    async def analytics_events(self, request: Request) -> Response:
        return json_response(self.tenant(request).events)

    # --- Gmail ------------------------------------------------------------------------------------

    async def gmail_list(self, request: Request) -> Response:
        return json_response(self.user_mailbox(request).listing)

    async def gmail_get(self, request: Request) -> Response:
        box = self.user_mailbox(request)
        message_id = request.path_params["id"]
        form = request.query_params.get("format", "full")
        if form not in GMAIL_FORMATS:
            raise ProblemError(400, f"invalid format '{form[:32]}': one of {', '.join(sorted(GMAIL_FORMATS))}")
        names = request.query_params.getlist("metadataHeaders")
        if len(names) > MAX_METADATA_HEADERS or any(len(n) > MAX_FIELD_LENGTH for n in names):
            raise ProblemError(400, "too many or too long metadataHeaders")
        body = box.messages.get(message_id)
        if body is None:
            raise ProblemError(404, f"message '{message_id}' not found in this mailbox")
        if form == "full":
            return json_response(body)
        return json_response(_json_bytes(gmail_format(box.records[message_id], form, names)))

    async def gmail_send(self, request: Request) -> Response:
        tenant_id = self.caller_tenant(request)
        user_id = self.mail_user(request)
        body = await read_json_object(request, MAX_SEND_BODY)
        raw = body.get("raw")
        if not isinstance(raw, str) or not BASE64URL_PATTERN.fullmatch(raw):
            raise ProblemError(400, "'raw' must be the message in base64url")
        try:
            message = _decode_base64url(raw)
        except (binascii.Error, ValueError):
            raise ProblemError(400, "'raw' is not valid base64url") from None
        return self._sent(tenant_id, user_id, message, raw)

    async def gmail_upload_send(self, request: Request) -> Response:
        """``users.messages.send`` on Gmail's upload path: the message is the body (``media``) or the
        second part of a ``multipart/related`` body after the JSON metadata (``multipart``)."""
        tenant_id = self.caller_tenant(request)
        user_id = self.mail_user(request)
        upload = request.query_params.get("uploadType", "")
        content_type = request.headers.get("content-type", "")
        if upload == "media":
            message = await read_body(request, MAX_SEND_BODY)
        elif upload == "multipart":
            message = _related_message(content_type, await read_body(request, MAX_SEND_BODY))
        else:
            raise ProblemError(400, "uploadType must be 'media' or 'multipart' (resumable is not served here)")
        return self._sent(tenant_id, user_id, message, base64.urlsafe_b64encode(message).decode("ascii"))

    @staticmethod
    def _sent(tenant_id: str, user_id: str, message: bytes, raw: str) -> Response:
        headers = BytesHeaderParser(policy=default_email_policy).parsebytes(message)
        if not str(headers.get("To", "")).strip():
            raise ProblemError(400, "recipient address required: the message has no To header")
        digest = uuid.uuid5(uuid.NAMESPACE_URL, f"{tenant_id}/{user_id}/{raw}").hex[:16]
        return json_response(_json_bytes({"id": digest, "threadId": digest, "labelIds": ["SENT"]}))

    # --- consents ---------------------------------------------------------------------------------

    async def create_consent(self, request: Request) -> Response:
        tenant_id = self.caller_tenant(request)
        subject = _header(request, "x-gateway-principal")
        if subject is None:
            raise ProblemError(403, "only the data subject may record a consent, and no caller is identified")
        body = await read_json_object(request)
        unknown = set(body) - {"grantee", "resources", "purpose", "expires_at", "subject"}
        if unknown:
            raise ProblemError(400, f"unknown members: {', '.join(sorted(unknown))}")
        if "subject" in body and body["subject"] != subject:
            raise ProblemError(403, "only the data subject may record a consent for their own resources")
        grantee = _short_string(body, "grantee")
        purpose = _short_string(body, "purpose")
        if not PURPOSE_PATTERN.fullmatch(purpose):
            raise ProblemError(400, "'purpose' must be a dotted purpose key such as 'essential.service'")
        resources = body.get("resources")
        if (
            not isinstance(resources, list)
            or not 0 < len(resources) <= MAX_CONSENT_RESOURCES
            or not all(isinstance(r, str) and r and len(r) <= MAX_FIELD_LENGTH for r in resources)
        ):
            raise ProblemError(
                400, f"'resources' must be a list of 1 to {MAX_CONSENT_RESOURCES} non-empty resource ids"
            )
        expires = parse_expiry(body.get("expires_at"))
        consent_id = str(uuid.uuid4())
        record: JSONObject = {
            "id": consent_id,
            "subject": subject,
            "tenant": tenant_id,
            "grantee": grantee,
            "resources": resources,
            "purpose": purpose,
            "expires_at": rfc3339(expires),
            "created_at": rfc3339(datetime.now(UTC)),
        }
        if not self.consents.add(record, expires):
            raise ProblemError(503, "the consent store is full")
        return json_response(
            _json_bytes({"id": consent_id}), status=201, headers={"Location": f"/consents/{consent_id}"}
        )

    async def get_consent(self, request: Request) -> Response:
        consent_id = request.path_params["id"]
        body = self.consents.body(consent_id)
        if body is None:
            raise ProblemError(404, f"consent '{consent_id}' not found")
        return json_response(body)

    def fixture_responses(self) -> dict[str, tuple[bytes, bytes]]:
        """Every fixture GET that always succeeds: path -> (content type, body)."""
        json_type = JSON_TYPE.encode()
        table = {"/healthz": (json_type, b'{"status":"ok"}'), "/tenants": (json_type, self.tenant_list)}
        for tenant_id, tenant in self.tenants.items():
            base = f"/tenants/{tenant_id}"
            for suffix, body in (
                ("", tenant.settings),
                ("/optouts", tenant.optouts),
                ("/contacts", tenant.contacts),
                ("/payments", tenant.payments),
                ("/calls", tenant.calls),
                ("/surveys", tenant.surveys),
                ("/analytics/events", tenant.events),
            ):
                table[base + suffix] = (json_type, body)
            items = {"contacts": tenant.contact, "payments": tenant.payment, "calls": tenant.call}
            for kind, bodies in items.items():
                for item_id, body in bodies.items():
                    table[f"{base}/{kind}/{item_id}"] = (json_type, body)
            for call_id, body in tenant.transcript.items():
                table[f"{base}/calls/{call_id}/transcript"] = (json_type, body)
            for call_id, audio in tenant.recording.items():
                table[f"{base}/calls/{call_id}/recording"] = (b"audio/wav", audio)
            for survey_id in tenant.survey_ids:
                table[f"{base}/surveys/{survey_id}/responses"] = (json_type, tenant.responses[survey_id])
                table[f"{base}/surveys/{survey_id}/results"] = (json_type, tenant.results[survey_id])
        return table

    # --- routing ----------------------------------------------------------------------------------

    def routes(self) -> list[Route]:
        get, post = ["GET"], ["POST"]
        table: list[tuple[str, Handler, list[str]]] = [
            ("/healthz", self.healthz, get),
            ("/tenants", self.list_tenants, get),
            ("/tenants/{tid}", self.get_tenant, get),
            ("/tenants/{tid}/optouts", self.optouts, get),
            ("/tenants/{tid}/contacts", self.list_contacts, get),
            ("/tenants/{tid}/contacts/{id}", self.get_contact, get),
            ("/tenants/{tid}/contacts/{id}/export", self.export_contact, post),
            ("/tenants/{tid}/payments", self.list_payments, get),
            ("/tenants/{tid}/payments/{id}", self.get_payment, get),
            ("/tenants/{tid}/calls", self.list_calls, get),
            ("/tenants/{tid}/calls/{id}", self.get_call, get),
            ("/tenants/{tid}/calls/{id}/recording", self.get_recording, get),
            ("/tenants/{tid}/calls/{id}/transcript", self.get_transcript, get),
            ("/tenants/{tid}/surveys", self.list_surveys, get),
            ("/tenants/{tid}/surveys/{id}/responses", self.survey_responses, get),
            ("/tenants/{tid}/surveys/{id}/results", self.survey_results, get),
            ("/tenants/{tid}/surveys/{id}/invitations", self.invite, post),
            ("/tenants/{tid}/analytics/events", self.analytics_events, get),
            ("/gmail/v1/users/{user_id}/messages", self.gmail_list, get),
            ("/gmail/v1/users/{user_id}/messages/send", self.gmail_send, post),
            ("/gmail/v1/users/{user_id}/messages/{id}", self.gmail_get, get),
            ("/upload/gmail/v1/users/{user_id}/messages/send", self.gmail_upload_send, post),
            ("/consents", self.create_consent, post),
            ("/consents/{id}", self.get_consent, get),
        ]
        return [Route(path, guarded(handler), methods=methods) for path, handler, methods in table]


class PrecomputedGets:
    """Answers a GET of a fixture path from a table of ready responses, before Starlette's routing.

    The load harness drives the gateway against these services; this keeps them far faster than the
    gateway in front, so they never set the measured rate. Anything else falls through to the routes,
    which serve the same bytes (and the errors).
    """

    def __init__(self, app: ASGIApp, responses: dict[str, tuple[bytes, bytes]]) -> None:
        self.app = app
        self.responses = {
            path: [(b"content-length", str(len(body)).encode()), (b"content-type", content_type)]
            for path, (content_type, body) in responses.items()
        }
        self.bodies = {path: body for path, (_, body) in responses.items()}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            headers = self.responses.get(scope["path"])
            if headers is not None:
                await send({"type": "http.response.start", "status": 200, "headers": headers})
                await send({"type": "http.response.body", "body": self.bodies[scope["path"]]})
                return
        await self.app(scope, receive, send)


async def _http_error(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, HTTPException):
        return problem(500, "internal error")
    details = {404: "no such route", 405: "method not allowed on this route"}
    detail = details.get(exc.status_code, str(exc.detail))
    return problem(exc.status_code, detail, headers=dict(exc.headers or {}))


async def _server_error(request: Request, exc: Exception) -> Response:
    return problem(500, "internal error in the reference services")


def create_upstream_app(now: datetime | None = None) -> Starlette:
    """A fresh instance of the reference services: its own consent store and mailbox cache.

    ``now`` is the fixture clock: every record is a fixed age before it (default: ``FIXTURE_EPOCH``,
    the wall clock when the services started).
    """
    services = ReferenceServices(now)
    return Starlette(
        routes=services.routes(),
        middleware=[Middleware(PrecomputedGets, responses=services.fixture_responses())],
        exception_handlers={HTTPException: _http_error, Exception: _server_error},
    )
