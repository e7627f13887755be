"""The reference Gmail service on its own: Gmail's formats and the upload send path, and what it
refuses (an unknown format, an upload type it does not serve, a multipart body of the wrong shape)."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import pytest

from gateway.demo.tenants import CONTOSO_TENANT
from gateway.demo.upstream import create_upstream_app
from tests.demo.http_client import Reply, call
from tests.support.servers import serve

USER = "0c1d2e3f-4a5b-4c6d-8e7f-901234567890"
HEADERS = {"X-Gateway-Tenant": CONTOSO_TENANT, "X-Gateway-Principal": USER}
MESSAGE = b"To: someone@example.com\r\nSubject: hi\r\n\r\nhello\r\n"


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with serve(create_upstream_app()) as server:
        yield server.url


@pytest.fixture(scope="module")
def message_id(url: str) -> str:
    reply = call(url, "GET", "/gmail/v1/users/me/messages", headers=HEADERS)
    first: str = reply.json()["messages"][0]["id"]
    return first


def get(url: str, message_id: str, query: str) -> Reply:
    return call(url, "GET", f"/gmail/v1/users/me/messages/{message_id}?{query}", headers=HEADERS)


def test_metadata_headers_filter_only_the_metadata_format(url: str, message_id: str) -> None:
    metadata = get(url, message_id, "format=metadata&metadataHeaders=To&metadataHeaders=DATE").json()
    assert [h["name"] for h in metadata["payload"]["headers"]] == ["To", "Date"]
    full = get(url, message_id, "format=full&metadataHeaders=To").json()
    assert len(full["payload"]["headers"]) > 2 and full["payload"]["body"]["data"]


def test_raw_is_the_message_the_full_format_describes(url: str, message_id: str) -> None:
    full = get(url, message_id, "").json()
    raw = base64.urlsafe_b64decode(get(url, message_id, "format=raw").json()["raw"])
    head = raw.split(b"\r\n\r\n", 1)[0].decode()
    for header in full["payload"]["headers"]:
        assert f"{header['name']}: " in head
    assert full["sizeEstimate"] == len(raw)


@pytest.mark.parametrize("query", ["format=FULL", "format=everything", "format="])
def test_an_unknown_format_is_a_400(url: str, message_id: str, query: str) -> None:
    assert get(url, message_id, query).status == 400


def upload(url: str, query: str, body: bytes, content_type: str) -> Reply:
    headers = {**HEADERS, "Content-Type": content_type}
    return call(url, "POST", f"/upload/gmail/v1/users/me/messages/send{query}", headers=headers, body=body)


def test_the_upload_path_takes_media_and_multipart(url: str) -> None:
    media = upload(url, "?uploadType=media", MESSAGE, "message/rfc822")
    assert media.status == 200 and media.json()["labelIds"] == ["SENT"]
    related = (b"--b\r\nContent-Type: application/json\r\n\r\n{}\r\n--b\r\nContent-Type: message/rfc822\r\n\r\n"
               + MESSAGE + b"\r\n--b--\r\n")  # fmt: skip
    multipart = upload(url, "?uploadType=multipart", related, 'multipart/related; boundary="b"')
    assert multipart.status == 200, multipart.body


@pytest.mark.parametrize(
    ("query", "body", "content_type"),
    [
        ("", MESSAGE, "message/rfc822"),
        ("?uploadType=resumable", MESSAGE, "message/rfc822"),
        ("?uploadType=multipart", MESSAGE, "message/rfc822"),
        ("?uploadType=multipart", b"--b\r\nContent-Type: text/plain\r\n\r\nx\r\n--b--\r\n",
         "multipart/related; boundary=b"),
        ("?uploadType=media", b"Subject: no recipient\r\n\r\nx", "message/rfc822"),
    ],
)
def test_uploads_it_cannot_take_are_refused(url: str, query: str, body: bytes, content_type: str) -> None:
    assert upload(url, query, body, content_type).status == 400
