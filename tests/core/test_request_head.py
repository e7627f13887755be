from __future__ import annotations

from typing import Any

import pytest

from gateway.request import MalformedRequest, parse_request_head


def scope(headers: list[tuple[bytes, bytes]], path: str = "/x") -> dict[str, Any]:
    return {
        "type": "http", "method": "GET", "path": path, "raw_path": path.encode(), "query_string": b"a=1&a=2",
        "headers": headers, "client": ("127.0.0.9", 5555), "scheme": "http",
    }


def test_strips_hop_by_hop_spoofed_identity_and_method_override() -> None:
    head = parse_request_head(
        scope([
            (b"host", b"svc.local"),
            (b"connection", b"keep-alive, X-Secret-Hop"),
            (b"x-secret-hop", b"1"),
            (b"keep-alive", b"timeout=5"),
            (b"te", b"trailers"),
            (b"upgrade", b"h2c"),
            (b"proxy-authorization", b"Basic abc"),
            (b"x-gateway-principal", b"admin"),
            (b"X-Gateway-Tenant".lower(), b"other"),
            (b"x-http-method-override", b"DELETE"),
            (b"authorization", b"Bearer abc"),
            (b"x-purpose", b"essential.service"),
            (b"accept", b"application/json"),
            (b"cookie", b"a=1"),
            (b"x-forwarded-for", b"10.0.0.1"),
        ]),
        32768,
        forward_authorization=False,
    )
    names = [n for n, _ in head.forward_headers]
    assert names == [b"accept", b"cookie"]
    assert head.authorization == b"Bearer abc"
    assert head.purpose == "essential.service"
    assert head.host == "svc.local"
    assert head.forward_xff == b"10.0.0.1, 127.0.0.9"
    assert head.target == "/x?a=1&a=2"


@pytest.mark.parametrize(
    "headers",
    [
        [(b"authorization", b"Bearer a"), (b"authorization", b"Bearer b")],
        [(b"x-purpose", b"a"), (b"x-purpose", b"b")],
        [(b"content-length", b"1"), (b"content-length", b"1")],
        [(b"content-length", b"5"), (b"transfer-encoding", b"chunked")],
        [(b"transfer-encoding", b"gzip")],
        [(b"content-length", b"-1")],
        [(b"content-length", b"1e3")],
        [(b"x-purpose", b"ess\x01ential")],
    ],
)
def test_ambiguous_heads_are_refused(headers: list[tuple[bytes, bytes]]) -> None:
    with pytest.raises(MalformedRequest) as caught:
        parse_request_head(scope(headers), 32768, forward_authorization=False)
    assert caught.value.status == 400


def test_header_block_limit_is_431() -> None:
    with pytest.raises(MalformedRequest) as caught:
        parse_request_head(scope([(b"x-big", b"a" * 40000)]), 32768, forward_authorization=False)
    assert caught.value.status == 431


def test_authorization_forwarded_only_when_configured() -> None:
    head = parse_request_head(scope([(b"authorization", b"Bearer a")]), 32768, forward_authorization=True)
    assert (b"authorization", b"Bearer a") in head.forward_headers
