"""Micro-benchmarks of the request path's own pieces (gateway/request.py, gateway/proxy.py).

Inputs are realistic: a request head as uvicorn hands it over for an API client with a ~1.3 KB Entra
token, a trace context and a forwarding chain; an upstream answer's raw headers as aiohttp parsed them
from a real response on loopback (cookies, caching, a Connection header naming a hop-by-hop header).
"""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import aiohttp
import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from gateway.proxy import response_headers
from gateway.request import parse_request_head

UPSTREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\n"
    b"Date: Sun, 22 Nov 2026 06:00:00 GMT\r\n"
    b"Server: payments/1.4\r\n"
    b"Content-Type: application/json\r\n"
    b"Cache-Control: private, max-age=0\r\n"
    b"Vary: Accept-Encoding\r\n"
    b"X-Request-Id: 7f3c2a9e-0d5b-4c1e-9f6a-2b8d4e1c7a30\r\n"
    b"Set-Cookie: session=abc; Path=/; HttpOnly\r\n"
    b"Set-Cookie: theme=dark; Path=/\r\n"
    b"Connection: keep-alive, X-Internal-Hop\r\n"
    b"Keep-Alive: timeout=5\r\n"
    b"X-Internal-Hop: 1\r\n"
    b"Content-Length: 2\r\n\r\n{}"
)


def fake_token() -> bytes:
    """A token-shaped value of realistic size (the benchmark does not verify it)."""

    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    claims = {
        "aud": "6e1c9a52-7d3b-4f0e-a8c4-1b2d3e4f5a60",
        "iss": "https://login.microsoftonline.com/x/v2.0",
        "roles": ["Support.Agent"],
        "scp": "access_as_user",
        "name": "A" * 40,
        "oid": "o" * 36,
        "tid": "t" * 36,
        "uti": "u" * 22,
        "preferred_username": "p" * 40,
        "azp": "a" * 36,
    }
    signature = base64.urlsafe_b64encode(b"s" * 256).rstrip(b"=").decode()
    return f"{part({'typ': 'JWT', 'alg': 'RS256', 'kid': 'k' * 27})}.{part(claims)}.{signature}".encode()


def api_scope() -> dict[str, Any]:
    path = "/tenants/3f2a6c1e-8d4b-4c7a-9e21-5b8d0f4a7c11/payments/pay-a-005"
    return {
        "type": "http", "http_version": "1.1", "method": "GET", "scheme": "http", "path": path,
        "raw_path": path.encode(), "query_string": b"fields=amount,card_number", "root_path": "",
        "client": ("10.1.2.3", 51234), "server": ("127.0.0.1", 8080),
        "headers": [
            (b"host", b"payments.internal:8080"),
            (b"user-agent", b"support-console/3.2 (python-requests/2.32)"),
            (b"accept", b"application/json"),
            (b"accept-encoding", b"gzip, deflate"),
            (b"authorization", b"Bearer " + fake_token()),
            (b"x-purpose", b"essential.service.operations.support"),
            (b"traceparent", b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            (b"x-forwarded-for", b"203.0.113.7"),
            (b"x-request-id", b"2d4c6e8a-1b3d-4f5a-9c7e-0a2b4c6d8e1f"),
            (b"x-gateway-tenant", b"spoofed"),
            (b"connection", b"keep-alive"),
        ],
    }  # fmt: skip


def test_parse_request_head(benchmark: BenchmarkFixture) -> None:
    scope = api_scope()
    head = benchmark(parse_request_head, scope, 32 * 1024, False)
    assert head.purpose == "essential.service.operations.support"
    assert all(not name.startswith(b"x-gateway-") for name, _ in head.forward_headers)


async def _real_response() -> aiohttp.ClientResponse:
    """One real aiohttp response from a loopback server that answers UPSTREAM_HEAD."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(UPSTREAM_HEAD)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/") as response:
            await response.read()
            return response
    finally:
        server.close()
        await server.wait_closed()


@pytest.fixture(scope="module")
def upstream_response() -> aiohttp.ClientResponse:
    return asyncio.run(asyncio.wait_for(_real_response(), timeout=10))


def test_response_headers(benchmark: BenchmarkFixture, upstream_response: aiohttp.ClientResponse) -> None:
    out = benchmark(response_headers, upstream_response)
    names = [name for name, _ in out]
    assert names.count(b"set-cookie") == 2
    assert b"connection" not in names and b"keep-alive" not in names and b"x-internal-hop" not in names
