"""The reference services over real HTTP on loopback: every route, the fixture facts, the error shapes."""

from __future__ import annotations

import base64
import io
import json
import uuid
import wave
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.applications import Starlette

from gateway.demo.fixtures import FIXTURE_EPOCH, OPTOUT_EMAIL, luhn_valid, parse_rfc3339
from gateway.demo.tenants import CONTOSO_TENANT, FABRIKAM_TENANT
from gateway.demo.upstream import ReferenceServices, create_upstream_app
from tests.demo.http_client import Reply, call
from tests.support.clock import rfc3339_in
from tests.support.servers import serve

A, B = CONTOSO_TENANT, FABRIKAM_TENANT
USER = "0c1d2e3f-4a5b-4c6d-8e7f-901234567890"
OTHER_USER = "aa11bb22-cc33-4d44-8e55-ff6677889900"


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with serve(create_upstream_app()) as server:
        yield server.url


def get(url: str, path: str, **headers: str) -> Reply:
    return call(url, "GET", path, headers=headers)


def ok_json(reply: Reply) -> Any:
    assert reply.status == 200, reply.body
    assert reply.content_type == "application/json"
    return reply.json()


def mail_headers(tenant: str = A, principal: str = USER) -> dict[str, str]:
    return {"X-Gateway-Tenant": tenant, "X-Gateway-Principal": principal}


# --- health, tenants, errors -------------------------------------------------------------------------


def test_healthz(url: str) -> None:
    assert ok_json(get(url, "/healthz")) == {"status": "ok"}


def test_tenants_list_both_with_the_recording_flags(url: str) -> None:
    tenants = ok_json(get(url, "/tenants"))["tenants"]
    assert [t["id"] for t in tenants] == [A, B]
    assert [t["call_recording_enabled"] for t in tenants] == [True, False]
    for tenant in tenants:
        assert tenant["name"] and tenant["retention_days"]["payments"] > 0
        assert ok_json(get(url, f"/tenants/{tenant['id']}")) == tenant


@pytest.mark.parametrize("tenant", [A, B])
def test_each_tenant_opt_out_list_holds_the_fixture_address(url: str, tenant: str) -> None:
    optouts = ok_json(get(url, f"/tenants/{tenant}/optouts"))
    assert optouts["tenant"] == tenant
    assert OPTOUT_EMAIL in optouts["emails"]


TENANT_ROUTES = [
    "",
    "/optouts",
    "/contacts",
    "/contacts/ct-a-001",
    "/payments",
    "/payments/pay-a-001",
    "/calls",
    "/calls/call-a-001",
    "/calls/call-a-001/recording",
    "/calls/call-a-001/transcript",
    "/surveys",
    "/surveys/sv-a-001/responses",
    "/surveys/sv-a-001/results",
    "/analytics/events",
]


@pytest.mark.parametrize("suffix", TENANT_ROUTES)
def test_unknown_tenant_is_a_404_problem(url: str, suffix: str) -> None:
    assert get(url, f"/tenants/{A}{suffix}").status == 200
    reply = get(url, f"/tenants/00000000-0000-0000-0000-000000000000{suffix}")
    assert reply.status == 404
    assert "unknown tenant" in reply.problem()["detail"]


def test_unknown_route_and_wrong_method_are_problems(url: str) -> None:
    missing = get(url, "/no/such/route")
    assert missing.status == 404
    missing.problem()
    wrong = call(url, "DELETE", f"/tenants/{A}/contacts")
    assert wrong.status == 405
    wrong.problem()
    assert "GET" in str(wrong.headers.get("allow"))


def test_the_services_do_not_enforce_tenant_isolation(url: str) -> None:
    # The gateway refuses cross-tenant requests; these services answer by the path alone.
    as_b = get(url, f"/tenants/{A}/contacts/ct-a-001", **mail_headers(B))
    assert as_b.status == 200
    assert as_b.body == get(url, f"/tenants/{A}/contacts/ct-a-001").body


# --- contacts ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("tenant", [A, B])
def test_contacts_list_and_one(url: str, tenant: str) -> None:
    listing = ok_json(get(url, f"/tenants/{tenant}/contacts"))
    contacts = listing["contacts"]
    assert listing["tenant"] == tenant and len(contacts) >= 10
    assert len({c["id"] for c in contacts}) == len(contacts)
    for contact in contacts:
        assert set(contact) >= {"id", "name", "email", "phone", "company", "marketing_opt_out"}
        assert ok_json(get(url, f"/tenants/{tenant}/contacts/{contact['id']}")) == contact
    opted_out = [c for c in contacts if c["marketing_opt_out"]]
    assert [c["email"] for c in opted_out] == [OPTOUT_EMAIL]
    optouts = set(ok_json(get(url, f"/tenants/{tenant}/optouts"))["emails"])
    assert all((c["email"] in optouts) == c["marketing_opt_out"] for c in contacts)


def test_contact_ids_are_tenant_specific(url: str) -> None:
    assert get(url, f"/tenants/{B}/contacts/ct-a-001").status == 404
    reply = get(url, f"/tenants/{A}/contacts/ct-a-999")
    assert reply.status == 404
    assert "ct-a-999" in reply.problem()["detail"]


def test_export_says_what_went_to_whom(url: str) -> None:
    headers = {
        "X-Recipient": "SalesForce",
        "X-Gateway-Principal": USER,
        "X-Gateway-Purpose": "essential.service",
        "X-Gateway-Decision-Id": "0190a8f0-0000-7000-8000-000000000001",
    }
    reply = call(url, "POST", f"/tenants/{A}/contacts/ct-a-002/export", headers=headers)
    exported = ok_json(reply)
    contact = ok_json(get(url, f"/tenants/{A}/contacts/ct-a-002"))
    assert exported["recipient"] == "salesforce"
    assert exported["record"] == contact
    assert exported["contact_id"] == "ct-a-002" and exported["tenant"] == A
    assert "email" in exported["fields"] and "id" not in exported["fields"]
    assert exported["requested_by"] == USER
    assert exported["purpose"] == "essential.service"
    assert exported["decision_id"] == headers["X-Gateway-Decision-Id"]


@pytest.mark.parametrize(
    ("path", "headers", "status"),
    [
        (f"/tenants/{A}/contacts/ct-a-002/export", {}, 400),
        (f"/tenants/{A}/contacts/ct-a-002/export", {"X-Recipient": "  "}, 400),
        (f"/tenants/{A}/contacts/ct-a-002/export", {"X-Recipient": "sales force"}, 400),
        (f"/tenants/{A}/contacts/ct-a-002/export", {"X-Recipient": "../etc"}, 400),
        (f"/tenants/{A}/contacts/ct-a-404/export", {"X-Recipient": "hubspot"}, 404),
    ],
)
def test_bad_exports(url: str, path: str, headers: dict[str, str], status: int) -> None:
    reply = call(url, "POST", path, headers=headers)
    assert reply.status == status
    reply.problem()


# --- payments ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("tenant", [A, B])
def test_payments(url: str, tenant: str) -> None:
    listing = ok_json(get(url, f"/tenants/{tenant}/payments"))
    ids = [p["id"] for p in listing["payments"]]
    assert all(set(p) == {"id"} for p in listing["payments"])
    ages = []
    for payment_id in ids:
        payment = ok_json(get(url, f"/tenants/{tenant}/payments/{payment_id}"))
        assert payment["id"] == payment_id
        assert len(payment["card_number"]) == 16 and luhn_valid(payment["card_number"])
        assert set(payment) >= {"expiry", "billing_address", "amount", "currency", "created_at"}
        ages.append((FIXTURE_EPOCH - parse_rfc3339(payment["created_at"])).days)
    assert max(ages) > 3650 and min(ages) < 365  # a decade old, and recent: relative to the services' start


# --- calls -------------------------------------------------------------------------------------------


def test_calls_list_and_one(url: str) -> None:
    for tenant in (A, B):
        calls = ok_json(get(url, f"/tenants/{tenant}/calls"))["calls"]
        for item in calls:
            assert set(item) >= {"id", "from", "to", "agent", "started_at", "duration_s", "has_recording"}
            assert ok_json(get(url, f"/tenants/{tenant}/calls/{item['id']}")) == item
    recorded_b = [c for c in ok_json(get(url, f"/tenants/{B}/calls"))["calls"] if c["has_recording"]]
    assert recorded_b == []


def test_recording_is_a_real_wav_and_the_transcript_has_segments(url: str) -> None:
    calls = ok_json(get(url, f"/tenants/{A}/calls"))["calls"]
    recorded = [c["id"] for c in calls if c["has_recording"]]
    assert recorded
    for call_id in recorded:
        reply = get(url, f"/tenants/{A}/calls/{call_id}/recording")
        assert reply.status == 200 and reply.content_type == "audio/wav"
        with wave.open(io.BytesIO(reply.body)) as audio:
            assert audio.getnchannels() == 1 and audio.getsampwidth() == 2
            assert audio.getnframes() > 0
        transcript = ok_json(get(url, f"/tenants/{A}/calls/{call_id}/transcript"))
        assert transcript["call_id"] == call_id
        assert transcript["segments"] and transcript["text"] == " ".join(
            s["text"] for s in transcript["segments"]
        )


def test_unrecorded_call_has_neither_recording_nor_transcript(url: str) -> None:
    calls = ok_json(get(url, f"/tenants/{A}/calls"))["calls"]
    unrecorded = next(c["id"] for c in calls if not c["has_recording"])
    for what in ("recording", "transcript"):
        reply = get(url, f"/tenants/{A}/calls/{unrecorded}/{what}")
        assert reply.status == 404
        assert "not recorded" in reply.problem()["detail"]


@pytest.mark.parametrize("what", ["recording", "transcript"])
def test_tenant_with_recording_disabled_serves_neither(url: str, what: str) -> None:
    calls = ok_json(get(url, f"/tenants/{B}/calls"))["calls"]
    for item in calls:
        reply = get(url, f"/tenants/{B}/calls/{item['id']}/{what}")
        assert reply.status == 404
        assert "recording disabled" in reply.problem()["detail"]
    assert get(url, f"/tenants/{B}/calls/call-b-999/{what}").status == 404


# --- surveys -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("tenant", [A, B])
def test_survey_responses_are_personal_and_results_are_not(url: str, tenant: str) -> None:
    surveys = ok_json(get(url, f"/tenants/{tenant}/surveys"))["surveys"]
    assert len(surveys) >= 2
    for survey in surveys:
        responses = ok_json(get(url, f"/tenants/{tenant}/surveys/{survey['id']}/responses"))["responses"]
        assert responses and all("@" in r["respondent_email"] and r["respondent_name"] for r in responses)
        reply = get(url, f"/tenants/{tenant}/surveys/{survey['id']}/results")
        results = ok_json(reply)
        assert results["response_count"] == len(responses)
        rating = next(q for q in results["questions"] if q["type"] == "rating")
        assert sum(rating["distribution"].values()) == len(responses)
        for response in responses:
            assert response["respondent_email"].encode() not in reply.body
            assert response["respondent_name"].encode() not in reply.body
            for answer in response["answers"]:
                if isinstance(answer["value"], str) and len(answer["value"]) > 12:
                    assert answer["value"].encode() not in reply.body
    assert get(url, f"/tenants/{tenant}/surveys/sv-x-001/results").status == 404


@pytest.mark.parametrize("tenant", [A, B])
def test_invitation_accepted(url: str, tenant: str) -> None:
    path = f"/tenants/{tenant}/surveys/{'sv-a-001' if tenant == A else 'sv-b-001'}/invitations"
    reply = call(url, "POST", path, json_body={"email": "new.customer@example.org"})
    assert reply.status == 202
    assert reply.json()["email"] == "new.customer@example.org"


@pytest.mark.parametrize("tenant", [A, B])
@pytest.mark.parametrize("email", [OPTOUT_EMAIL, "OptOut@Example.COM"])
def test_invitation_to_an_opted_out_address_is_refused(url: str, tenant: str, email: str) -> None:
    path = f"/tenants/{tenant}/surveys/{'sv-a-002' if tenant == A else 'sv-b-002'}/invitations"
    reply = call(url, "POST", path, json_body={"email": email})
    assert reply.status == 409
    assert "opt-out" in reply.problem()["detail"]


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"{not json",
        b"\xff\xfe",
        b'["a@example.org"]',
        b'"a@example.org"',
        b"{}",
        b'{"email": 5}',
        b'{"email": "not-an-address"}',
        b'{"email": "two@@example.org"}',
        b'{"email": "a@example.org", "extra": 1}',
    ],
)
def test_bad_invitation_bodies_are_400(url: str, body: bytes) -> None:
    reply = call(url, "POST", f"/tenants/{A}/surveys/sv-a-001/invitations", body=body)
    assert reply.status == 400
    reply.problem()


def test_invitation_edge_cases(url: str) -> None:
    unknown = call(
        url, "POST", f"/tenants/{A}/surveys/sv-a-404/invitations", json_body={"email": "a@example.org"}
    )
    assert unknown.status == 404
    huge = call(url, "POST", f"/tenants/{A}/surveys/sv-a-001/invitations", body=b"{" + b" " * 70_000 + b"}")
    assert huge.status == 413
    huge.problem()


# --- analytics ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("tenant", [A, B])
def test_analytics_events(url: str, tenant: str) -> None:
    events = ok_json(get(url, f"/tenants/{tenant}/analytics/events"))["events"]
    assert len(events) >= 20
    for event in events:
        assert set(event) >= {"user_id", "ip", "page", "user_agent", "referrer", "timestamp"}
    assert [e["timestamp"] for e in events] == sorted(e["timestamp"] for e in events)


# --- Gmail -------------------------------------------------------------------------------------------


def test_gmail_list_and_messages(url: str) -> None:
    listing = ok_json(get(url, f"/gmail/v1/users/{USER}/messages", **mail_headers()))
    assert listing["resultSizeEstimate"] == len(listing["messages"]) > 0
    for ref in listing["messages"]:
        message = ok_json(get(url, f"/gmail/v1/users/{USER}/messages/{ref['id']}", **mail_headers()))
        assert message["id"] == ref["id"] and message["threadId"] == ref["threadId"]
        names = {h["name"] for h in message["payload"]["headers"]}
        assert names >= {"From", "To", "Subject", "Date"}
        text = base64.urlsafe_b64decode(message["payload"]["body"]["data"]).decode()
        assert message["snippet"] == " ".join(text.split())[:100]
        assert message["labelIds"] and int(message["internalDate"]) > 0 and message["sizeEstimate"] > 0


def test_gmail_me_is_the_principal_in_the_callers_tenant(url: str) -> None:
    as_me = get(url, "/gmail/v1/users/me/messages", **mail_headers())
    as_id = get(url, f"/gmail/v1/users/{USER}/messages", **mail_headers())
    assert as_me.body == as_id.body
    other_user = get(url, f"/gmail/v1/users/{OTHER_USER}/messages", **mail_headers())
    other_tenant = get(url, f"/gmail/v1/users/{USER}/messages", **mail_headers(B))
    assert len({as_me.body, other_user.body, other_tenant.body}) == 3
    first = as_id.json()["messages"][0]["id"]
    assert get(url, f"/gmail/v1/users/me/messages/{first}", **mail_headers()).status == 200
    # Another user's message id is not in this mailbox.
    reply = get(url, f"/gmail/v1/users/{OTHER_USER}/messages/{first}", **mail_headers())
    assert reply.status == 404
    reply.problem()


@pytest.mark.parametrize(
    ("path", "headers", "status"),
    [
        ("/gmail/v1/users/me/messages", {"X-Gateway-Tenant": A}, 400),
        ("/gmail/v1/users/me/messages", {"X-Gateway-Principal": USER}, 400),
        (f"/gmail/v1/users/{USER}/messages", {"X-Gateway-Tenant": str(uuid.UUID(int=1))}, 404),
        (f"/gmail/v1/users/{'x' * 300}/messages", {"X-Gateway-Tenant": A}, 400),
    ],
)
def test_gmail_needs_the_gateway_headers(url: str, path: str, headers: dict[str, str], status: int) -> None:
    reply = get(url, path, **headers)
    assert reply.status == status
    reply.problem()


def raw_message(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def test_gmail_send(url: str) -> None:
    raw = raw_message("To: someone@example.org\r\nSubject: hello\r\n\r\nHi there")
    path = "/gmail/v1/users/me/messages/send"
    reply = call(url, "POST", path, headers=mail_headers(), json_body={"raw": raw})
    sent = ok_json(reply)
    assert sent["labelIds"] == ["SENT"] and sent["id"] and sent["threadId"]
    padded = call(url, "POST", path, headers=mail_headers(), json_body={"raw": raw + "=" * (-len(raw) % 4)})
    assert padded.status == 200


@pytest.mark.parametrize(
    "body",
    [
        b"nope",
        b"[]",
        b"{}",
        b'{"raw": 1}',
        b'{"raw": ""}',
        b'{"raw": "not base64!"}',
        json.dumps({"raw": raw_message("Subject: no recipient\r\n\r\nbody")}).encode(),
    ],
)
def test_gmail_send_bad_bodies(url: str, body: bytes) -> None:
    reply = call(url, "POST", "/gmail/v1/users/me/messages/send", headers=mail_headers(), body=body)
    assert reply.status == 400
    reply.problem()


# --- consents ----------------------------------------------------------------------------------------


def consent_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "grantee": "Security.Investigator",
        "resources": ["4319b2e164eaa704"],
        "purpose": "essential.service.security",
        "expires_at": rfc3339_in(days=365),
    }
    body.update(overrides)
    return body


def test_consent_is_recorded_for_the_subject_in_its_tenant(url: str) -> None:
    reply = call(url, "POST", "/consents", headers=mail_headers(B), json_body=consent_body())
    assert reply.status == 201, reply.body
    consent_id = reply.json()["id"]
    assert uuid.UUID(consent_id).version == 4
    assert reply.headers["location"] == f"/consents/{consent_id}"
    record = ok_json(get(url, f"/consents/{consent_id}"))
    assert record == {
        **consent_body(),
        "id": consent_id,
        "subject": USER,
        "tenant": B,
        "created_at": record["created_at"],
    }
    assert record["created_at"].endswith("Z")


def test_consent_ids_are_unguessable_and_distinct(url: str) -> None:
    ids = {
        call(url, "POST", "/consents", headers=mail_headers(), json_body=consent_body()).json()["id"]
        for _ in range(20)
    }
    assert len(ids) == 20 and all(uuid.UUID(i).version == 4 for i in ids)


def test_consent_times_are_normalised_and_may_lie_in_the_past(url: str) -> None:
    body = consent_body(expires_at="2020-06-01T12:00:00.5+02:00", subject=USER)
    reply = call(url, "POST", "/consents", headers=mail_headers(), json_body=body)
    assert reply.status == 201
    record = ok_json(get(url, f"/consents/{reply.json()['id']}"))
    assert record["expires_at"] == "2020-06-01T10:00:00Z"
    assert "subject" in record and record["subject"] == USER


def test_only_the_subject_may_create_a_consent(url: str) -> None:
    someone_else = call(
        url, "POST", "/consents", headers=mail_headers(), json_body=consent_body(subject=OTHER_USER)
    )
    assert someone_else.status == 403
    someone_else.problem()
    nobody = call(url, "POST", "/consents", headers={"X-Gateway-Tenant": A}, json_body=consent_body())
    assert nobody.status == 403
    no_tenant = call(
        url, "POST", "/consents", headers={"X-Gateway-Principal": USER}, json_body=consent_body()
    )
    assert no_tenant.status == 400
    unknown_tenant = call(
        url, "POST", "/consents", headers=mail_headers(str(uuid.UUID(int=7))), json_body=consent_body()
    )
    assert unknown_tenant.status == 404


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"{",
        b"[]",
        json.dumps(consent_body(grantee="")).encode(),
        json.dumps(consent_body(grantee=7)).encode(),
        json.dumps(consent_body(grantee="x" * 300)).encode(),
        json.dumps(consent_body(grantee="a\nb")).encode(),
        json.dumps(consent_body(resources=[])).encode(),
        json.dumps(consent_body(resources="4319b2e164eaa704")).encode(),
        json.dumps(consent_body(resources=["ok", ""])).encode(),
        json.dumps(consent_body(resources=["r"] * 101)).encode(),
        json.dumps(consent_body(purpose="Essential Service")).encode(),
        json.dumps(consent_body(purpose="essential..service")).encode(),
        json.dumps(consent_body(expires_at="2030-01-01")).encode(),
        json.dumps(consent_body(expires_at="2030-01-01T00:00:00")).encode(),
        json.dumps(consent_body(expires_at="2030-13-01T00:00:00Z")).encode(),
        json.dumps(consent_body(expires_at=1893456000)).encode(),
        json.dumps(consent_body(extra="member")).encode(),
        json.dumps({k: v for k, v in consent_body().items() if k != "purpose"}).encode(),
    ],
)
def test_bad_consent_bodies_are_400(url: str, body: bytes) -> None:
    reply = call(url, "POST", "/consents", headers=mail_headers(), body=body)
    assert reply.status == 400, reply.body
    reply.problem()


def test_unknown_consent_is_404(url: str) -> None:
    reply = get(url, f"/consents/{uuid.uuid4()}")
    assert reply.status == 404
    reply.problem()


# --- determinism across instances ----------------------------------------------------------------------


def fixture_paths(url: str) -> list[str]:
    paths = ["/tenants"]
    for tenant in (A, B):
        base = f"/tenants/{tenant}"
        paths += [
            base + suffix for suffix in ("", "/optouts", "/contacts", "/payments", "/calls", "/surveys")
        ]
        paths.append(base + "/analytics/events")
        paths += [f"{base}/contacts/{c['id']}" for c in get(url, base + "/contacts").json()["contacts"]]
        paths += [f"{base}/payments/{p['id']}" for p in get(url, base + "/payments").json()["payments"]]
        for item in get(url, base + "/calls").json()["calls"]:
            paths.append(f"{base}/calls/{item['id']}")
            if item["has_recording"]:
                paths += [f"{base}/calls/{item['id']}/recording", f"{base}/calls/{item['id']}/transcript"]
        for survey in get(url, base + "/surveys").json()["surveys"]:
            paths += [f"{base}/surveys/{survey['id']}/responses", f"{base}/surveys/{survey['id']}/results"]
    return paths


def test_two_instances_serve_identical_bytes(url: str) -> None:
    with serve(create_upstream_app()) as second:
        paths = fixture_paths(url)
        assert len(paths) > 80
        for path in paths:
            first_reply, second_reply = get(url, path), get(second.url, path)
            assert first_reply.status == second_reply.status == 200, path
            assert first_reply.body == second_reply.body, path
        for tenant in (A, B):
            mail = "/gmail/v1/users/me/messages"
            assert (
                get(url, mail, **mail_headers(tenant)).body
                == get(second.url, mail, **mail_headers(tenant)).body
            )


def test_consents_belong_to_one_instance(url: str) -> None:
    created = call(url, "POST", "/consents", headers=mail_headers(), json_body=consent_body()).json()["id"]
    with serve(create_upstream_app()) as second:
        assert get(second.url, f"/consents/{created}").status == 404
    assert get(url, f"/consents/{created}").status == 200


def test_precomputed_answers_equal_the_routes_answers(url: str) -> None:
    services = ReferenceServices()
    table = services.fixture_responses()
    routes_only = Starlette(routes=services.routes())
    with serve(routes_only) as plain:
        assert set(fixture_paths(plain.url)) | {"/healthz"} == set(table)
        for path, (content_type, body) in table.items():
            fast, routed = get(url, path), get(plain.url, path)
            assert fast.status == routed.status == 200, path
            assert fast.body == routed.body == body, path
            assert fast.content_type == routed.content_type == content_type.decode(), path
            assert fast.headers["content-length"] == routed.headers["content-length"], path
