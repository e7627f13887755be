"""Hostile HTTP through a real socket: whatever the bytes, nothing reaches the upstream that was not
authorized, every answer carries a decision id, and every decision is in the audit store.

The gateway sits in front of a counting echo upstream. Each malformed request otherwise carries a
valid token and purpose for a resource its principal may read, so the malformation is the only
reason left to refuse it: a test that would pass for any request proves nothing.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gateway.demo.tenants import CONTOSO_TENANT as A
from gateway.demo.tenants import FABRIKAM_TENANT as B
from tests.hostile.support import (
    SUPPORT,
    Counting,
    Ledger,
    RawReply,
    exchange,
    gateway,
    stored_record,
)
from tests.support.idp import DevIdP
from tests.support.servers import ThreadedServer
from tests.support.stack import Stack

OWN = f"/tenants/{A}/contacts/echo-1"
CLOSE = b"Connection: close\r\n\r\n"
SEND = "/gmail/v1/users/me/messages/send"


@pytest.fixture(scope="module")
def stack(
    idp: DevIdP, echo: tuple[ThreadedServer, Counting], reference: tuple[ThreadedServer, Counting],
    ledger: Ledger, tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    audit = tmp_path_factory.mktemp("audit") / "audit.sqlite"
    with gateway(idp, echo[0].url, audit, resolver_url=reference[0].url,
                 GATEWAY_SERVER_MAX_BODY_BYTES=str(1024 * 1024)) as running:  # fmt: skip
        yield running
    missing = ledger.reconcile(audit)
    assert not missing, f"decisions answered but not in the audit store: {sorted(missing)[:5]}"


@pytest.fixture(scope="module")
def support_token(stack: Stack) -> str:
    return stack.mint(A, roles=["Support.Agent"])


@pytest.fixture(scope="module")
def mail_token(stack: Stack) -> str:
    return stack.mint(A, app="mail-backend", roles=["Service.Mail"])


def head(token: str, purpose: str = SUPPORT) -> bytes:
    return f"Host: gateway.test\r\nAuthorization: Bearer {token}\r\nX-Purpose: {purpose}\r\n".encode()


def send(stack: Stack, ledger: Ledger, upstream: Counting, data: bytes, expected: int = 1,
         timeout: float = 5.0, requests: int | None = None) -> tuple[list[RawReply], list[str]]:  # fmt: skip
    """Send raw bytes holding ``requests`` requests (default ``expected``; read until ``expected``
    answers or close); returns the replies and the paths the upstream received meanwhile."""
    mark = upstream.mark()
    raw = exchange(stack.port, data, expect=expected, timeout=timeout)
    from tests.hostile.support import parse_replies

    if requests is None:
        requests = expected if expected > 1 else 1
    if requests == 0:  # as many requests as the server found in the bytes (smuggling cases)
        requests = max(1, len(parse_replies(raw)))
    replies = ledger.saw_raw(stack.audit_path, raw, requests)
    return replies, [s.path for s in upstream.proxied_since(mark)]


def assert_refused(replies: list[RawReply], statuses: set[int], case: str) -> None:
    assert replies, f"{case}: no answer at all"
    reply = replies[0]
    assert reply.status in statuses, (case, reply.status, reply.body[:200])
    assert reply.header("X-Decision-Id"), f"{case}: answered without a decision id"
    assert reply.header("Content-Type") == "application/problem+json", case


def test_the_baseline_request_is_allowed(stack: Stack, ledger: Ledger, echo: tuple[ThreadedServer, Counting],
                                         support_token: str) -> None:  # fmt: skip
    """The control for every case below: the same request, well-formed, is forwarded."""
    data = f"GET {OWN} HTTP/1.1\r\n".encode() + head(support_token) + b"Connection: close\r\n\r\n"
    replies, reached = send(stack, ledger, echo[1], data)
    assert replies[0].status == 200, replies[0].body
    assert reached == [OWN]


MALFORMED_LINES = {
    "garbage": b"GARBAGE",
    "method only": b"GET",
    "http/0.9": b"GET %(own)s",
    "unknown version": b"GET %(own)s HTTP/9.9",
    "http/2 preface": b"PRI * HTTP/2.0",
    "extra token": b"GET %(own)s HTTP/1.1 extra",
    "lower-case method": b"get %(own)s HTTP/1.1",
    "nul in method": b"G\x00T %(own)s HTTP/1.1",
    "nul in target": b"GET %(own)s\x00 HTTP/1.1",
    "tab in target": b"GET %(own)s\tx HTTP/1.1",
    "space in target": b"GET /tenants/%(a)s/contacts/echo 1 HTTP/1.1",
    "raw utf-8 in target": b"GET /tenants/%(a)s/contacts/\xe2\x80\x8becho-1 HTTP/1.1",
    "raw latin-1 in target": b"GET /tenants/%(a)s/contacts/\xe9cho-1 HTTP/1.1",
    "backslash target": b"GET \\tenants\\%(a)s\\contacts\\echo-1 HTTP/1.1",
    "asterisk": b"GET * HTTP/1.1",
    "authority form": b"CONNECT upstream.internal:443 HTTP/1.1",
    "empty target": b"GET  HTTP/1.1",
    "relative target": b"GET tenants/%(a)s/contacts/echo-1 HTTP/1.1",
    "unregistered method": b"BREW %(own)s HTTP/1.1",
    "control char method": b"GE\x7fT %(own)s HTTP/1.1",
    "cr in line": b"GET %(own)s\rHTTP/1.1",
    "100 KiB target": b"GET /tenants/%(a)s/contacts/" + b"a" * 100_000 + b" HTTP/1.1",
}


@pytest.mark.parametrize("case", sorted(MALFORMED_LINES))
def test_malformed_request_lines_are_refused(stack: Stack, ledger: Ledger, echo: tuple[ThreadedServer, Counting],
                                             support_token: str, case: str) -> None:  # fmt: skip
    line = MALFORMED_LINES[case] % {b"own": OWN.encode(), b"a": A.encode()}
    ledger.tried("malformed request line")
    replies, reached = send(stack, ledger, echo[1], line + b"\r\n" + head(support_token) + b"Connection: close\r\n\r\n")
    assert reached == [], f"{case}: reached the upstream"
    assert_refused(replies, {400, 403, 431}, case)


BAD_ESCAPES = [
    "echo%zz", "echo%", "echo%2", "echo%g0", "echo%00", "echo%0a", "echo%0d%0aX-Gateway-Tenant:%20x", "echo%ff",
    "echo%c0%ae", "%c0%ae%c0%ae", "echo%252e", "%u002e%u002e", "%%32%65%%32%65", "%2e%2e", "echo%2F..%2F..",
    "echo%5c..", "echo%3bx=1", "echo%3fq=1", "echo%23frag", "echo%20", "%e2%80%8becho-1", "%ef%bc%8fetc",
]  # fmt: skip


@pytest.mark.parametrize("segment", BAD_ESCAPES)
def test_invalid_or_ambiguous_percent_encoding_is_denied(
    stack: Stack, ledger: Ledger, echo: tuple[ThreadedServer, Counting], support_token: str, segment: str
) -> None:
    ledger.tried("percent-encoding")
    target = f"/tenants/{A}/contacts/{segment}"
    data = f"GET {target} HTTP/1.1\r\n".encode() + head(support_token) + b"Connection: close\r\n\r\n"
    replies, reached = send(stack, ledger, echo[1], data)
    assert reached == [], f"{segment}: reached the upstream"
    assert_refused(replies, {400, 403}, segment)
    if replies[0].status == 403:
        assert replies[0].json()["reasons"][0]["policy"] == "default-deny"


def test_escapes_of_unreserved_characters_decide_on_the_decoded_path(
    stack: Stack, ledger: Ledger, echo: tuple[ThreadedServer, Counting], support_token: str
) -> None:
    """%65 is 'e': the gateway decides on what the upstream will route, here its own tenant's record."""
    ledger.tried("percent-encoding")
    data = f"GET /tenants/{A}/contacts/%65cho-1 HTTP/1.1\r\n".encode() + head(support_token) + CLOSE
    replies, reached = send(stack, ledger, echo[1], data)
    assert replies[0].status == 200
    assert reached == [OWN]


def test_query_strings_pass_untouched_whatever_their_encoding(
    stack: Stack, ledger: Ledger, echo: tuple[ThreadedServer, Counting], support_token: str
) -> None:
    """The gateway does not decide on the query string, so it must not rewrite it either."""
    query = "a=%zz&b=%00&c=%2F..%2F&d=%E2%80%8B&e=&&f=1;g=2&_method=DELETE"
    ledger.tried("query string")
    data = f"GET {OWN}?{query} HTTP/1.1\r\n".encode() + head(support_token) + b"Connection: close\r\n\r\n"
    replies, reached = send(stack, ledger, echo[1], data)
    assert replies[0].status == 200
    assert reached == [OWN]
    assert replies[0].json()["query"] == query


CONTROL_IN_HEADERS = {
    "nul in value": b"X-Note: a\x00b\r\n",
    "soh in value": b"X-Note: a\x01b\r\n",
    "del in value": b"X-Note: a\x7fb\r\n",
    "bare cr in value": b"X-Note: a\rb\r\n",
    "bare lf injecting a header": b"X-Note: a\nX-Gateway-Principal: admin\r\n",
    "bare lf injecting authorization": b"X-Note: a\nAuthorization: Bearer forged\r\n",
    "nul in name": b"X-No\x00te: a\r\n",
    "space in name": b"X Note: a\r\n",
    "space before colon": b"X-Note : a\r\n",
    "empty name": b": a\r\n",
    "obs-fold": b"X-Note: a\r\n b\r\n",
    "obs-fold continuing purpose": b"X-Note: a\r\n\tX-Purpose: marketing.advertising\r\n",
    "nul in purpose": b"X-Purpose-Extra: x\r\nX-Purpose\x00: y\r\n",
}


@pytest.mark.parametrize("case", sorted(CONTROL_IN_HEADERS))
def test_control_characters_in_headers_are_refused(stack: Stack, ledger: Ledger,
                                                   echo: tuple[ThreadedServer, Counting],
                                                   support_token: str, case: str) -> None:  # fmt: skip
    ledger.tried("control characters in headers")
    data = f"GET {OWN} HTTP/1.1\r\n".encode() + head(support_token) + CONTROL_IN_HEADERS[case] + CLOSE
    replies, reached = send(stack, ledger, echo[1], data)
    assert reached == [], f"{case}: reached the upstream"
    assert_refused(replies, {400}, case)


@pytest.mark.parametrize(
    "value",
    ["essential.service\x00", "essential.servic\xe9", "essential.\tservice", "essential.service\x1b[31m",
     "essential.service, marketing.advertising", "essential.service;q=1", "", " ", "ESSENTIAL.SERVICE",
     "essential.service.", ".essential.service", "essential..service", "essential.service.operations.support.x",
     "a" * 4000],
)  # fmt: skip
def test_hostile_purpose_values_are_refused(stack: Stack, ledger: Ledger, echo: tuple[ThreadedServer, Counting],
                                            support_token: str, value: str) -> None:  # fmt: skip
    ledger.tried("X-Purpose value")
    data = (f"GET {OWN} HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer {support_token}\r\n".encode()
            + b"X-Purpose: " + value.encode("latin-1") + b"\r\nConnection: close\r\n\r\n")  # fmt: skip
    replies, reached = send(stack, ledger, echo[1], data)
    assert reached == [], f"{value!r}: reached the upstream"
    assert_refused(replies, {400}, repr(value))


DUPLICATES = {
    "authorization twice, same value": "Authorization: Bearer {t}\r\n",
    "authorization twice, other case": "AUTHORIZATION: Bearer {t}\r\n",
    "authorization plus a basic one": "authorization: Basic YWRtaW46YWRtaW4=\r\n",
    "x-purpose twice, same value": "X-Purpose: " + SUPPORT + "\r\n",
    "x-purpose twice, another purpose": "x-purpose: marketing.advertising\r\n",
    "x-recipient twice": "X-Recipient: salesforce\r\nX-Recipient: evil\r\n",
    "x-consent-ref twice": "X-Consent-Ref: c-1\r\nX-Consent-Ref: c-2\r\n",
    "host twice": "Host: other.test\r\n",
    "traceparent twice": "traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n" * 2,
}


@pytest.mark.parametrize("case", sorted(DUPLICATES))
def test_duplicated_decision_headers_are_refused(stack: Stack, ledger: Ledger, echo: tuple[ThreadedServer, Counting],
                                                 support_token: str, case: str) -> None:  # fmt: skip
    ledger.tried("duplicate header")
    extra = DUPLICATES[case].format(t=support_token).encode()
    data = f"GET {OWN} HTTP/1.1\r\n".encode() + head(support_token) + extra + b"Connection: close\r\n\r\n"
    replies, reached = send(stack, ledger, echo[1], data)
    assert reached == [], f"{case}: reached the upstream"
    assert_refused(replies, {400}, case)


@pytest.mark.parametrize(
    "authorization",
    ["Bearer {t}, Bearer {t}", "Bearer {t} {t}", "Bearer\t{t}x", "bearer  {t}.", "Basic {t}", "Bearer", "{t}",
     "Bearer {t}\x00", "Bearer " + "A" * 9000],
)  # fmt: skip
def test_mangled_authorization_values_are_401(stack: Stack, ledger: Ledger, echo: tuple[ThreadedServer, Counting],
                                              support_token: str, authorization: str) -> None:  # fmt: skip
    ledger.tried("Authorization value")
    value = authorization.format(t=support_token).encode()
    data = f"GET {OWN} HTTP/1.1\r\nHost: g\r\nX-Purpose: {SUPPORT}\r\n".encode()
    data += b"Authorization: " + value + b"\r\nConnection: close\r\n\r\n"
    replies, reached = send(stack, ledger, echo[1], data)
    assert reached == []
    assert_refused(replies, {400, 401}, authorization[:40])
    if replies[0].status == 401:
        assert (replies[0].header("WWW-Authenticate") or "").startswith("Bearer")


@pytest.mark.parametrize(
    "method", ["PROPFIND", "PURGE", "TRACE", "OPTIONS", "HEAD", "PUT", "PATCH", "DELETE", "MKCOL", "LOCK",
               "SEARCH", "SOURCE", "LINK", "REPORT", "MOVE", "COPY"],
)  # fmt: skip
def test_methods_without_a_route_are_denied_by_default(stack: Stack, ledger: Ledger,
                                                       echo: tuple[ThreadedServer, Counting],
                                                       support_token: str, method: str) -> None:  # fmt: skip
    ledger.tried("unmapped method")
    data = f"{method} {OWN} HTTP/1.1\r\n".encode() + head(support_token) + b"Connection: close\r\n\r\n"
    replies, reached = send(stack, ledger, echo[1], data)
    assert reached == [], f"{method} reached the upstream"
    assert replies and replies[0].status in (400, 403), (method, replies[:1])
    assert replies[0].header("X-Decision-Id")
    if replies[0].status == 403 and method != "HEAD":
        assert replies[0].json()["reasons"] == [
            {"policy": "default-deny", "source": "route maps",
             "clause": "No route of the route maps matches this method and path; unmapped requests are denied."}
        ]  # fmt: skip


OVERRIDES = ["X-HTTP-Method-Override", "X-HTTP-Method", "X-Method-Override", "x-http-method-override"]


@pytest.mark.parametrize("header", OVERRIDES)
def test_method_override_headers_never_change_the_authorized_action(
    stack: Stack, ledger: Ledger, echo: tuple[ThreadedServer, Counting], support_token: str, header: str
) -> None:
    ledger.tried("method override")
    # A read the agent may do, asking the upstream to delete instead: decided and forwarded as a read.
    data = f"GET {OWN} HTTP/1.1\r\n".encode() + head(support_token) + f"{header}: DELETE\r\n".encode() + CLOSE
    replies, reached = send(stack, ledger, echo[1], data)
    assert replies[0].status == 200
    seen = replies[0].json()
    assert seen["method"] == "GET" and reached == [OWN]
    names = {n.lower() for n, _ in seen["headers"]}
    assert not names & {h.lower() for h in OVERRIDES}
    record = stored_record_when_committed(stack, replies[0].header("X-Decision-Id") or "")
    assert (record["method"], record["action"]) == ("GET", "read")
    # An export the agent may not do, dressed up as a read: still an export, still refused.
    target = f"/tenants/{A}/contacts/echo-1/export"
    data = (f"POST {target} HTTP/1.1\r\n".encode() + head(support_token)
            + f"{header}: GET\r\nX-Recipient: salesforce\r\nContent-Length: 0\r\n".encode() + CLOSE)  # fmt: skip
    replies, reached = send(stack, ledger, echo[1], data)
    assert reached == []
    assert_refused(replies, {403}, header)
    record = stored_record_when_committed(stack, replies[0].header("X-Decision-Id") or "")
    assert (record["method"], record["action"], record["decision"]) == ("POST", "export", "deny")


def stored_record_when_committed(stack: Stack, decision_id: str) -> dict[str, object]:
    from tests.support.poll import wait_until

    found: list[dict[str, object]] = []

    def committed() -> bool:
        record = stored_record(stack.audit_path, decision_id)
        if record is not None:
            found.append(record)
        return record is not None

    wait_until(committed, timeout=5, message=f"decision {decision_id} in the store")
    return found[-1]


def test_query_parameter_pollution_does_not_move_the_decision(
    stack: Stack, ledger: Ledger, echo: tuple[ThreadedServer, Counting], support_token: str
) -> None:
    """No route map binds a query parameter, so none can change the decision: the decision names the
    path's tenant and record, and the upstream gets the query as sent (its parameters are its own)."""
    ledger.tried("query pollution", 3)
    for query in (f"tid={B}&tid={A}&id=other", f"tenant={B}&userId=me&userId={B}", "_method=DELETE&id[]=x&id=y"):
        data = f"GET {OWN}?{query} HTTP/1.1\r\n".encode() + head(support_token) + b"Connection: close\r\n\r\n"
        replies, reached = send(stack, ledger, echo[1], data)
        assert replies[0].status == 200 and reached == [OWN]
        assert replies[0].json()["query"] == query
        record = stored_record_when_committed(stack, replies[0].header("X-Decision-Id") or "")
        assert (record["resource_tenant"], record["resource_id"]) == (A, "echo-1")
    # The same pollution on another tenant's path is refused exactly like the unpolluted request.
    target = f"/tenants/{B}/contacts/echo-1?tid={A}&tenant={A}"
    data = f"GET {target} HTTP/1.1\r\n".encode() + head(support_token) + b"Connection: close\r\n\r\n"
    replies, reached = send(stack, ledger, echo[1], data)
    assert reached == []
    assert_refused(replies, {403}, "cross-tenant with polluted query")


def test_absolute_form_targets_are_decided_on_their_path_and_never_reach_their_host(
    stack: Stack, ledger: Ledger, echo: tuple[ThreadedServer, Counting], support_token: str
) -> None:
    ledger.tried("absolute-form target", 2)
    data = f"GET http://evil.example{OWN} HTTP/1.1\r\n".encode() + head(support_token) + b"Connection: close\r\n\r\n"
    replies, reached = send(stack, ledger, echo[1], data)
    assert replies[0].status == 200 and reached == [OWN]  # our own upstream, not evil.example
    data = f"GET http://evil.example/tenants/{B}/contacts/echo-1 HTTP/1.1\r\n".encode() + head(support_token)
    replies, reached = send(stack, ledger, echo[1], data + b"Connection: close\r\n\r\n")
    assert reached == []
    assert_refused(replies, {403}, "absolute-form, other tenant")


def test_client_sent_gateway_and_forwarding_headers_never_reach_the_upstream(
    stack: Stack, ledger: Ledger, echo: tuple[ThreadedServer, Counting], support_token: str
) -> None:
    ledger.tried("spoofed identity header", 6)
    spoofed = (b"X-Gateway-Principal: admin\r\nx-gateway-tenant: " + B.encode() + b"\r\nX-GATEWAY-PURPOSE: x\r\n"
               b"X-Gateway-Decision-Id: forged\r\nForwarded: for=1.2.3.4;host=evil\r\n"
               b"X-Forwarded-Host: evil\r\n")  # fmt: skip
    data = f"GET {OWN} HTTP/1.1\r\n".encode() + head(support_token) + spoofed + b"Connection: close\r\n\r\n"
    replies, reached = send(stack, ledger, echo[1], data)
    assert replies[0].status == 200 and reached == [OWN]
    headers = replies[0].json()["headers"]
    assert [v for n, v in headers if n == "x-gateway-tenant"] == [A]
    assert [v for n, v in headers if n == "x-gateway-decision-id"] == [replies[0].header("X-Decision-Id")]
    assert "admin" not in [v for n, v in headers if n == "x-gateway-principal"]
    assert "forwarded" not in {n for n, _ in headers}
    assert [v for n, v in headers if n == "x-forwarded-host"] == ["gateway.test"]


# -- request smuggling -----------------------------------------------------------------------------------

SMUGGLED = f"GET /tenants/{B}/contacts/echo-smuggled HTTP/1.1\r\nHost: g\r\n\r\n"

FRAMINGS = {
    "CL then TE": b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "TE then CL": b"Transfer-Encoding: chunked\r\nContent-Length: 60\r\n\r\n0\r\n\r\n",
    "two CL": b"Content-Length: 4\r\nContent-Length: 60\r\n\r\nabcd",
    "CL list": b"Content-Length: 4, 60\r\n\r\nabcd",
    "CL plus sign": b"Content-Length: +4\r\n\r\nabcd",
    "CL negative": b"Content-Length: -4\r\n\r\nabcd",
    "CL hex": b"Content-Length: 0x4\r\n\r\nabcd",
    "CL overflow": b"Content-Length: 18446744073709551620\r\n\r\nabcd",
    "TE chunked twice in a list": b"Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
    "TE two headers": b"Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n",
    "TE xchunked": b"Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
    "TE chunked then identity": b"Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
    "TE space before colon": b"Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
    "TE obs-fold": b"X-A: b\r\n Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
    "TE vertical tab": b"Transfer-Encoding:\x0bchunked\r\n\r\n0\r\n\r\n",
    "chunk size overflow": b"Transfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFFFF\r\nabcd\r\n0\r\n\r\n",
    "chunk size with bare LF": b"Transfer-Encoding: chunked\r\n\r\n4\nabcd\n0\n\n",
    "chunk size negative": b"Transfer-Encoding: chunked\r\n\r\n-4\r\nabcd\r\n0\r\n\r\n",
    "chunk data longer than its size": b"Transfer-Encoding: chunked\r\n\r\n2\r\nabcd\r\n0\r\n\r\n",
    "LF-only head": b"Content-Length: 4\n\nabcd",
}


@pytest.mark.parametrize("case", sorted(FRAMINGS))
def test_ambiguous_framing_smuggles_nothing(stack: Stack, ledger: Ledger, echo: tuple[ThreadedServer, Counting],
                                            mail_token: str, case: str) -> None:  # fmt: skip
    """The first request is a send the mail service may make; after its ambiguous body comes a request
    for another tenant's data. Refused framing: nothing reaches the upstream. Whatever the gateway
    accepts, the upstream sees at most the one authorized send, never the smuggled path."""
    ledger.tried("request smuggling")
    first = f"POST {SEND} HTTP/1.1\r\n".encode() + head(mail_token, "essential.service")
    data = first + FRAMINGS[case] + SMUGGLED.encode()
    replies, reached = send(stack, ledger, echo[1], data, expected=2, timeout=3, requests=0)
    assert all("smuggled" not in path for path in reached), f"{case}: smuggled request reached the upstream"
    assert reached in ([], [SEND]), (case, reached)
    assert replies, f"{case}: no answer"
    if not reached:
        assert_refused(replies, {400}, case)
    for reply in replies[1:]:
        assert reply.status in (400, 401), (case, reply.status)  # the second request, with no token


@pytest.mark.parametrize("coding", ["gzip, chunked", "identity, chunked"])
def test_transfer_codings_other_than_chunked_are_refused(
    stack: Stack, ledger: Ledger, echo: tuple[ThreadedServer, Counting], mail_token: str, coding: str
) -> None:
    ledger.tried("request smuggling")
    first = f"POST {SEND} HTTP/1.1\r\n".encode() + head(mail_token, "essential.service")
    data = first + f"Transfer-Encoding: {coding}\r\nConnection: close\r\n\r\n4\r\nabcd\r\n0\r\n\r\n".encode()
    replies, reached = send(stack, ledger, echo[1], data)
    assert reached == [], f"a body in an undecoded {coding!r} coding reached the upstream"
    assert_refused(replies, {400, 501}, coding)


def test_pipelined_requests_are_each_authorized_on_their_own(
    stack: Stack, ledger: Ledger, echo: tuple[ThreadedServer, Counting], support_token: str
) -> None:
    ledger.tried("pipelining", 3)
    own = f"GET {OWN} HTTP/1.1\r\n".encode() + head(support_token) + b"\r\n"
    other = f"GET /tenants/{B}/contacts/echo-2 HTTP/1.1\r\n".encode() + head(support_token) + b"\r\n"
    tokenless = f"GET {OWN} HTTP/1.1\r\nHost: g\r\nX-Purpose: {SUPPORT}\r\nConnection: close\r\n\r\n".encode()
    replies, reached = send(stack, ledger, echo[1], own + other + tokenless, expected=3)
    assert [r.status for r in replies] == [200, 403, 401]
    assert reached == [OWN]
    assert len({r.header("X-Decision-Id") for r in replies}) == 3


def test_trailers_never_reach_the_upstream(stack: Stack, ledger: Ledger, echo: tuple[ThreadedServer, Counting],
                                           mail_token: str) -> None:  # fmt: skip
    ledger.tried("chunked trailers")
    first = f"POST {SEND} HTTP/1.1\r\n".encode() + head(mail_token, "essential.service")
    data = first + (b"Transfer-Encoding: chunked\r\nTrailer: X-Gateway-Principal\r\nConnection: close\r\n\r\n"
                    b"4\r\nabcd\r\n0\r\nX-Gateway-Principal: admin\r\n"
                    b"Authorization: Bearer forged\r\n\r\n")  # fmt: skip
    replies, reached = send(stack, ledger, echo[1], data)
    assert replies[0].status == 200 and reached == [SEND]
    seen = replies[0].json()
    assert seen["body_size"] == 4
    assert "admin" not in [v for n, v in seen["headers"] if n == "x-gateway-principal"]
    assert "authorization" not in {n for n, _ in seen["headers"]}


# -- sizes ---------------------------------------------------------------------------------------------


def test_too_many_headers_is_431(stack: Stack, ledger: Ledger, echo: tuple[ThreadedServer, Counting],
                                 support_token: str) -> None:  # fmt: skip
    ledger.tried("header count/size", 2)
    many = b"".join(b"X-H%d: v\r\n" % i for i in range(4000))  # about 40 KiB, each header tiny
    data = f"GET {OWN} HTTP/1.1\r\n".encode() + head(support_token) + many + b"Connection: close\r\n\r\n"
    replies, reached = send(stack, ledger, echo[1], data)
    assert reached == []
    assert_refused(replies, {431}, "4000 headers")
    # Many headers that fit under the limit are not mistaken for an attack.
    some = b"".join(b"X-H%d: v\r\n" % i for i in range(500))
    data = f"GET {OWN} HTTP/1.1\r\n".encode() + head(support_token) + some + b"Connection: close\r\n\r\n"
    replies, reached = send(stack, ledger, echo[1], data)
    assert replies[0].status == 200 and reached == [OWN]


def test_a_head_that_never_ends_is_cut_off_at_the_limit(stack: Stack, ledger: Ledger,
                                                        echo: tuple[ThreadedServer, Counting],
                                                        support_token: str) -> None:  # fmt: skip
    """A single 4 MiB header value (and, separately, 4 MiB of header lines with no blank line after
    them) is refused once the head passes the limit, without buffering the rest or waiting for it."""
    ledger.tried("header count/size", 2)
    for tail in (b"X-Big: " + b"a" * (4 << 20), b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 64) for i in range(60000))):
        data = f"GET {OWN} HTTP/1.1\r\n".encode() + head(support_token) + tail
        replies, reached = send(stack, ledger, echo[1], data, timeout=10)
        assert reached == []
        assert_refused(replies, {431}, "endless head")


def test_declared_huge_bodies_are_413_before_any_byte_is_read(
    stack: Stack, ledger: Ledger, echo: tuple[ThreadedServer, Counting], mail_token: str
) -> None:
    ledger.tried("huge body", 2)
    for length in ("10737418240", "999999999999999999"):
        data = (f"POST {SEND} HTTP/1.1\r\n".encode() + head(mail_token, "essential.service")
                + f"Content-Length: {length}\r\nConnection: close\r\n\r\n".encode() + b"x" * 1000)  # fmt: skip
        replies, reached = send(stack, ledger, echo[1], data)
        assert reached == []
        assert_refused(replies, {413}, length)


def test_a_chunked_body_past_the_limit_is_413_and_cut(stack: Stack, ledger: Ledger,
                                                      echo: tuple[ThreadedServer, Counting],
                                                      mail_token: str) -> None:  # fmt: skip
    """A single chunk announcing 4 GiB, of which 2 MiB arrive (the limit here is 1 MiB)."""
    ledger.tried("huge body")
    data = (f"POST {SEND} HTTP/1.1\r\n".encode() + head(mail_token, "essential.service")
            + b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\nFFFFFFFF\r\n" + b"y" * (2 << 20))  # fmt: skip
    replies, _ = send(stack, ledger, echo[1], data, timeout=10)
    assert_refused(replies, {413}, "4 GiB chunk")


def test_a_lifted_body_past_its_route_limit_is_413(stack: Stack, ledger: Ledger,
                                                   echo: tuple[ThreadedServer, Counting]) -> None:  # fmt: skip
    """The survey invitation route buffers its body to read the address (4096 bytes at most)."""
    ledger.tried("huge body", 2)
    token = stack.mint(A, roles=["Marketing.Manager"])
    target = f"/tenants/{A}/surveys/echo-s/invitations"
    padded = b'{"email": "someone@example.com", "pad": "' + b"p" * 8000 + b'"}'
    for framing in (f"Content-Length: {len(padded)}\r\n\r\n".encode() + padded,
                    b"Transfer-Encoding: chunked\r\n\r\n" + b"%x\r\n" % len(padded) + padded + b"\r\n0\r\n\r\n"):
        data = (f"POST {target} HTTP/1.1\r\n".encode() + head(token, "marketing.communications.email")
                + b"Connection: close\r\n" + framing)  # fmt: skip
        replies, reached = send(stack, ledger, echo[1], data)
        assert reached == []
        assert_refused(replies, {413}, "lifted body")


def test_refusals_by_the_http_layer_are_audited(stack: Stack, ledger: Ledger,
                                                echo: tuple[ThreadedServer, Counting]) -> None:  # fmt: skip
    ledger.tried("malformed request line")
    replies, reached = send(stack, ledger, echo[1], b"GARBAGE\r\n\r\n")
    assert reached == []
    assert_refused(replies, {400}, "garbage")
    record = stored_record_when_committed(stack, replies[0].header("X-Decision-Id") or "")
    assert (record["status"], record["decision"], record["reason"]) == (400, "deny", "not_http")


def test_a_trailer_never_stands_in_for_a_missing_header(stack: Stack, ledger: Ledger,
                                                        echo: tuple[ThreadedServer, Counting],
                                                        mail_token: str) -> None:  # fmt: skip
    """uvicorn appends trailer fields to the request's header list; the hardened protocol drops them,
    so a token or purpose sent only as a trailer authenticates nothing."""
    ledger.tried("chunked trailers", 2)
    first = f"POST {SEND} HTTP/1.1\r\nHost: g\r\nX-Purpose: essential.service\r\n".encode()
    data = first + (b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n4\r\nabcd\r\n0\r\n"
                    + f"Authorization: Bearer {mail_token}\r\n\r\n".encode())  # fmt: skip
    replies, reached = send(stack, ledger, echo[1], data)
    assert reached == []
    assert_refused(replies, {401}, "token in a trailer")
    first = f"POST {SEND} HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer {mail_token}\r\n".encode()
    data = first + b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\nX-Purpose: essential.service\r\n\r\n"
    replies, reached = send(stack, ledger, echo[1], data)
    assert reached == []
    assert_refused(replies, {400}, "purpose in a trailer")


def test_underscore_spellings_of_identity_headers_never_reach_the_upstream(
    stack: Stack, ledger: Ledger, echo: tuple[ThreadedServer, Counting], support_token: str
) -> None:
    """WSGI and CGI servers (Werkzeug, uWSGI, PHP) map both X-Gateway-Principal and X_Gateway_Principal to
    HTTP_X_GATEWAY_PRINCIPAL, so a client-sent underscore spelling can shadow the gateway's own header."""
    ledger.tried("spoofed identity header", 3)
    spoofed = b"X_Gateway_Principal: admin\r\nX_Gateway_Tenant: " + B.encode() + b"\r\nX_Forwarded_For: 6.6.6.6\r\n"
    data = f"GET {OWN} HTTP/1.1\r\n".encode() + head(support_token) + spoofed + b"Connection: close\r\n\r\n"
    replies, reached = send(stack, ledger, echo[1], data)
    assert reached == [OWN]
    names = {n.replace("_", "-") for n, _ in replies[0].json()["headers"] if "_" in n}
    assert not names, f"forwarded: {sorted(names)}"


def test_a_proxied_response_carries_one_date_header(
    stack: Stack, ledger: Ledger, echo: tuple[ThreadedServer, Counting], mail_token: str
) -> None:
    ledger.tried("response headers")
    data = (f"POST {SEND} HTTP/1.1\r\n".encode() + head(mail_token, "essential.service")
            + b"Content-Length: 2\r\nConnection: close\r\n\r\n{}")  # fmt: skip
    replies, _ = send(stack, ledger, echo[1], data)
    assert replies[0].status == 200
    names = [n.lower() for n, _ in replies[0].headers]
    assert names.count("date") == 1, replies[0].headers


def test_a_deeply_nested_body_to_lift_is_a_400(stack: Stack, ledger: Ledger,
                                               echo: tuple[ThreadedServer, Counting]) -> None:  # fmt: skip
    ledger.tried("huge body")
    token = stack.mint(A, roles=["Marketing.Manager"])
    body = b"[" * 2000 + b"]" * 2000
    data = (f"POST /tenants/{A}/surveys/echo-s/invitations HTTP/1.1\r\n".encode()
            + head(token, "marketing.communications.email")
            + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)  # fmt: skip
    replies, reached = send(stack, ledger, echo[1], data)
    assert reached == []
    assert_refused(replies, {400}, "nested body")
