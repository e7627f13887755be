"""Google's own Gmail client (google-api-python-client), unmodified, pointed at the gateway.

The service is built from a static discovery document shipped beside this file (Gmail v1's
``users.messages`` list, get and send, cut from Google's published document), never fetched. Its
root URL is the gateway's, its credentials a dev IdP token, and
each request carries ``X-Purpose``. Through the gateway the reference Gmail service answers every
``format``, takes mail on both send paths, and a masked ``format=raw`` read carries no body.
"""

from __future__ import annotations

import base64
import email
import json
from collections.abc import Iterator
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

import pytest
from google.oauth2.credentials import Credentials
from googleapiclient.discovery import build_from_document
from googleapiclient.errors import HttpError
from googleapiclient.http import HttpRequest, MediaInMemoryUpload

from gateway.demo.fixtures import mailbox
from gateway.demo.tenants import CONTOSO_TENANT as A
from tests.clients.conftest import TwoDoorIdP
from tests.support.stack import Stack

DISCOVERY = (Path(__file__).parent / "gmail.v1.discovery.json").read_text()
SERVICE = "essential.service"
SUPPORT = "essential.service.operations.support"


_built: list[Any] = []


def gmail(stack: Stack, token: str) -> Any:
    # The document's rootUrl is set to the gateway's: googleapiclient's api_endpoint override would
    # move the upload path's host but keep rootUrl's https scheme, and the gateway here is plain http.
    document = {**json.loads(DISCOVERY), "rootUrl": stack.url + "/"}
    service = build_from_document(document, credentials=Credentials(token))
    _built.append(service)
    return service


@pytest.fixture(autouse=True)
def _close_the_services() -> Iterator[None]:
    """A service keeps its httplib2 connections open until closed (else: unclosed socket warnings)."""
    yield
    while _built:
        _built.pop().close()


def run(request: HttpRequest, purpose: str) -> Any:
    request.headers["x-purpose"] = purpose
    return request.execute(num_retries=0)


def oid_of(token: str) -> str:
    segment = token.split(".")[1]
    oid: str = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))["oid"]
    return oid


@pytest.fixture(scope="module")
def user_token(stack: Stack) -> str:
    return stack.mint(A, user="gmail-client-user")


@pytest.fixture(scope="module")
def messages(stack: Stack, user_token: str) -> list[dict[str, str]]:
    listing = run(gmail(stack, user_token).users().messages().list(userId="me"), SERVICE)
    refs: list[dict[str, str]] = listing["messages"]
    assert listing["resultSizeEstimate"] == len(refs) > 0
    return refs


def test_list_and_read_every_format(stack: Stack, user_token: str, messages: list[dict[str, str]]) -> None:
    api = gmail(stack, user_token).users().messages()
    ref = messages[0]
    full = run(api.get(userId="me", id=ref["id"]), SERVICE)
    assert full["id"] == ref["id"] and full["threadId"] == ref["threadId"]
    text = base64.urlsafe_b64decode(full["payload"]["body"]["data"]).decode()
    headers = {h["name"]: h["value"] for h in full["payload"]["headers"]}
    assert full["snippet"] == " ".join(text.split())[:100]

    minimal = run(api.get(userId="me", id=ref["id"], format="minimal"), SERVICE)
    assert "payload" not in minimal and "raw" not in minimal
    assert {k: minimal[k] for k in ("id", "threadId", "labelIds", "internalDate")} == {
        k: full[k] for k in ("id", "threadId", "labelIds", "internalDate")
    }

    metadata = run(api.get(userId="me", id=ref["id"], format="metadata", metadataHeaders=["from", "Subject"]), SERVICE)
    assert [h["name"] for h in metadata["payload"]["headers"]] == ["From", "Subject"]
    assert "body" not in metadata["payload"] and "raw" not in metadata
    every_header = run(api.get(userId="me", id=ref["id"], format="metadata"), SERVICE)
    assert every_header["payload"]["headers"] == full["payload"]["headers"]

    raw = run(api.get(userId="me", id=ref["id"], format="raw"), SERVICE)
    assert "payload" not in raw
    parsed = email.message_from_bytes(base64.urlsafe_b64decode(raw["raw"]), policy=default_policy)
    assert isinstance(parsed, EmailMessage)
    assert parsed["Subject"] == headers["Subject"] and parsed["From"] == headers["From"]
    body = parsed.get_body()
    assert body is not None and body.get_content().replace("\r\n", "\n").rstrip("\n") == text


def test_an_unknown_format_is_refused_by_the_client_itself(stack: Stack, user_token: str,
                                                           messages: list[dict[str, str]]) -> None:  # fmt: skip
    """The discovery document's enum: the client refuses before anything is sent."""
    with pytest.raises(TypeError):
        gmail(stack, user_token).users().messages().get(userId="me", id=messages[0]["id"], format="everything")


def message_bytes(to: str = "customer@example.com") -> bytes:
    message = EmailMessage()
    message["To"], message["From"], message["Subject"] = to, "agent@contoso.example", "Your ticket"
    message.set_content("Hello, your ticket is resolved.")
    return message.as_bytes()


def test_send_as_raw_json_and_on_the_upload_path(stack: Stack) -> None:
    token = stack.mint(A, app="mail-backend", roles=["Service.Mail"])
    api = gmail(stack, token).users().messages()
    raw = base64.urlsafe_b64encode(message_bytes()).decode()
    sent = run(api.send(userId="me", body={"raw": raw}), SERVICE)
    assert sent["labelIds"] == ["SENT"] and sent["id"]
    media = MediaInMemoryUpload(message_bytes(), mimetype="message/rfc822")
    uploaded = run(api.send(userId="me", media_body=media), SERVICE)  # uploadType=media
    assert uploaded["labelIds"] == ["SENT"]
    media = MediaInMemoryUpload(message_bytes(), mimetype="message/rfc822")
    multipart = run(api.send(userId="me", body={"labelIds": []}, media_body=media), SERVICE)  # uploadType=multipart
    assert multipart["labelIds"] == ["SENT"]
    with pytest.raises(HttpError) as refused:  # the reference service checks the message on either path
        run(api.send(userId="me", media_body=MediaInMemoryUpload(b"Subject: x\r\n\r\nno recipient",
                                                                 mimetype="message/rfc822")), SERVICE)  # fmt: skip
    assert refused.value.resp.status == 400


def test_the_upload_path_is_decided_like_the_json_one(stack: Stack) -> None:
    """Gmail data is never used for advertising, whichever path the message takes."""
    token = stack.mint(A, app="mail-backend", roles=["Service.Mail"])
    media = MediaInMemoryUpload(message_bytes(), mimetype="message/rfc822")
    with pytest.raises(HttpError) as refused:
        run(gmail(stack, token).users().messages().send(userId="me", media_body=media), "marketing.advertising")
    assert refused.value.resp.status == 403
    reasons = json.loads(refused.value.content)["reasons"]
    assert "halocrm-gmail-no-advertising" in {r["policy"] for r in reasons}


def test_a_refused_read_shows_the_refusal_to_the_client(stack: Stack, messages: list[dict[str, str]],
                                                       user_token: str) -> None:  # fmt: skip
    """A support agent may not read someone else's mailbox: the client raises HttpError with the
    gateway's 403, its decision id, and the problem document naming the policy and its clause."""
    agent = stack.mint(A, roles=["Support.Agent"])
    owner = oid_of(user_token)
    with pytest.raises(HttpError) as refused:
        run(gmail(stack, agent).users().messages().get(userId=owner, id=messages[0]["id"]), SUPPORT)
    error = refused.value
    assert error.resp.status == 403 and "403" in str(error)
    assert error.resp["x-decision-id"]
    problem = json.loads(error.content)
    assert problem["status"] == 403 and problem["decision_id"] == error.resp["x-decision-id"]
    assert problem["reasons"] and all(r["clause"] for r in problem["reasons"])


def test_a_masked_raw_read_carries_no_body(stack: Stack, idp: TwoDoorIdP) -> None:
    """An operator supporting a user sees metadata masked and no content: in ``raw`` the whole
    message (headers and body in one string) is withheld."""
    token = stack.mint(A, user="gmail-operator", roles=["Engineering.Operator"])
    api = gmail(stack, token).users().messages()
    refs = run(api.list(userId="me"), SUPPORT)["messages"]
    record = {m["id"]: m for m in mailbox(A, oid_of(token))}[refs[0]["id"]]
    text = base64.urlsafe_b64decode(record["payload"]["body"]["data"]).decode()
    raw = run(api.get(userId="me", id=refs[0]["id"], format="raw"), SUPPORT)
    assert raw["raw"] == "[REDACTED]" and raw["snippet"] == "[REDACTED]"
    assert raw["id"] == refs[0]["id"]
    minimal = run(api.get(userId="me", id=refs[0]["id"], format="minimal"), SUPPORT)
    assert minimal["snippet"] == "[REDACTED]"
    full = run(api.get(userId="me", id=refs[0]["id"]), SUPPORT)
    assert full["payload"]["body"]["data"] == "[REDACTED]"
    reply = stack.http("GET", f"/gmail/v1/users/me/messages/{refs[0]['id']}?format=raw", token=token, purpose=SUPPORT)
    assert "/raw" in (reply.header("X-Redacted-Fields") or "").split(",")
    words = [w for w in text.split() if len(w) > 6]
    assert words and not any(w.encode() in reply.body for w in words)
