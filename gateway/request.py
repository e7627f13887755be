"""One pass over the client's request head: limits, the headers the gateway reads, and what it forwards.

The gateway reads identity only from the verified token, so every client-sent ``X-Gateway-*`` header is
dropped here, as are hop-by-hop headers (RFC 9110 section 7.6.1, including those the client names in
``Connection``, and ``HTTP2-Settings``, which only means something on the connection that offered
``Upgrade: h2c``) and method-override headers, which would let a client make the upstream perform an
action other than the one that was authorized. A header the gateway decides on (``Authorization``,
``X-Purpose``, ...) that arrives twice is a malformed request, never "the first one wins".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"http2-settings",  # RFC 9113 section 3.2.1 (h2c upgrades are ignored: gateway/http_protocol.py)
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
# Never forwarded: the upstream gets the original host in X-Forwarded-Host and the verified identity in
# X-Gateway-*; Expect is answered by the gateway's own server.
NOT_FORWARDED = frozenset(
    {
        b"host",
        b"expect",
        b"content-length",
        b"x-forwarded-host",
        b"x-forwarded-proto",
        b"x-http-method-override",
        b"x-http-method",
        b"x-method-override",
        b"forwarded",
        b"traceparent",
        b"tracestate",
        b"x-original-url",
        b"x-rewrite-url",
    }
)
# Headers the gateway decides on: at most one of each.
SINGLE_VALUED = frozenset(
    {b"authorization", b"x-purpose", b"x-recipient", b"x-consent-ref", b"content-length", b"host", b"traceparent"}
)


class MalformedRequest(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


@dataclass(slots=True)
class RequestHead:
    method: str
    path: str
    raw_path: bytes
    query_string: bytes
    client_ip: str
    scheme: str
    host: str
    authorization: bytes | None = None
    purpose: str | None = None
    recipient: str | None = None
    consent_ref: str | None = None
    traceparent: str | None = None
    content_length: int | None = None
    chunked: bool = False
    forward_xff: bytes = b""
    forward_headers: list[tuple[bytes, bytes]] = field(default_factory=list)

    @property
    def has_body(self) -> bool:
        return self.chunked or bool(self.content_length)

    @property
    def target(self) -> str:
        """The request target as the client sent it (raw, still percent-encoded)."""
        if self.query_string:
            return self.raw_path.decode("latin-1") + "?" + self.query_string.decode("latin-1")
        return self.raw_path.decode("latin-1")


def parse_request_head(scope: dict[str, Any], max_header_bytes: int, forward_authorization: bool) -> RequestHead:
    headers: list[tuple[bytes, bytes]] = scope["headers"]
    size = 0
    for name, value in headers:
        size += len(name) + len(value) + 4
    if size > max_header_bytes:
        raise MalformedRequest(431, f"request header block is {size} bytes; the limit is {max_header_bytes}")

    client = scope.get("client")
    raw_path: bytes = scope.get("raw_path") or scope["path"].encode("utf-8")
    head = RequestHead(
        method=scope["method"],
        path=scope["path"],
        raw_path=raw_path,
        query_string=scope.get("query_string", b""),
        client_ip=client[0] if client else "",
        scheme=scope.get("scheme", "http"),
        host="",
    )
    seen: set[bytes] = set()
    connection_tokens: set[bytes] = set()
    transfer_encodings: list[bytes] = []
    xff: list[bytes] = []
    kept: list[tuple[bytes, bytes]] = []
    for name, value in headers:
        # uvicorn lower-cases header names. A name spelled with underscores is dropped, as nginx and
        # Envoy do: WSGI/CGI upstreams read X_Gateway_Principal as the gateway's own X-Gateway-Principal.
        if b"_" in name:
            continue
        if name in SINGLE_VALUED:
            if name in seen:
                raise MalformedRequest(400, f"duplicate {name.decode()} header")
            seen.add(name)
            if name == b"authorization":
                head.authorization = value
                if forward_authorization:
                    kept.append((name, value))
                continue
            if name == b"x-purpose":
                head.purpose = _text(value, "X-Purpose")
                continue
            if name == b"x-recipient":
                head.recipient = _text(value, "X-Recipient").lower()
                kept.append((name, value))
                continue
            if name == b"x-consent-ref":
                head.consent_ref = _text(value, "X-Consent-Ref")
                kept.append((name, value))
                continue
            if name == b"content-length":
                head.content_length = _content_length(value)
                continue
            if name == b"host":
                head.host = _text(value, "Host")
                continue
            if name == b"traceparent":
                head.traceparent = value.decode("latin-1")
                continue
        if name == b"connection":
            connection_tokens.update(t.strip().lower() for t in value.split(b","))
            continue
        if name == b"transfer-encoding":
            transfer_encodings.extend(t.strip().lower() for t in value.split(b","))
            continue
        if name == b"x-forwarded-for":
            xff.append(value)
            continue
        if name in HOP_BY_HOP or name in NOT_FORWARDED or name.startswith(b"x-gateway-"):
            continue
        kept.append((name, value))

    if transfer_encodings:
        if head.content_length is not None:
            raise MalformedRequest(400, "both Content-Length and Transfer-Encoding: refusing an ambiguous body")
        if transfer_encodings != [b"chunked"]:
            # Anything but plain chunked would reach the upstream still encoded, or be read differently.
            raise MalformedRequest(400, "only Transfer-Encoding: chunked is accepted")
        head.chunked = True
    if not head.host and scope.get("http_version") == "1.1":
        raise MalformedRequest(400, "an HTTP/1.1 request must carry a Host header (RFC 9112 section 3.2)")
    if connection_tokens:
        kept = [(n, v) for n, v in kept if n not in connection_tokens]
    if head.client_ip:
        xff.append(head.client_ip.encode())
    head.forward_xff = b", ".join(xff)
    head.forward_headers = kept
    return head


def _text(value: bytes, header: str) -> str:
    try:
        text = value.decode("ascii").strip()
    except UnicodeDecodeError:
        raise MalformedRequest(400, f"{header} must be ASCII") from None
    if not text.isprintable():
        raise MalformedRequest(400, f"{header} contains control characters")
    return text


def _content_length(value: bytes) -> int:
    text = value.strip()
    if not text.isdigit() or len(text) > 18:
        raise MalformedRequest(400, "Content-Length is not a non-negative integer")
    return int(text)
