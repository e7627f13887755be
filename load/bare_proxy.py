"""A bare pass-through Python proxy: the ceiling for any Python gateway built on the same parts.

Raw ASGI (no framework) on uvicorn with uvloop and httptools, forwarding every request with one shared
``aiohttp.ClientSession`` -- the same server and client the gateway uses, with none of its work
(no token check, no decision, no audit, no masking). It drops hop-by-hop headers in both directions,
streams request bodies, and reads small upstream bodies whole (one ASGI send), as the gateway does.
It answers 502 when the upstream cannot be reached. It is a measuring instrument, not a product.

Run: ``python load/bare_proxy.py --port P --upstream http://127.0.0.1:U``.
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import uvicorn
from yarl import URL

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"host",
        b"content-length",
    }
)
SMALL_BODY_BYTES = 64 * 1024


class BareProxy:
    def __init__(self, upstream: str) -> None:
        self._base = upstream.rstrip("/")
        self._session: aiohttp.ClientSession | None = None

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(receive, send)
            return
        if kind != "http":
            return
        session = self._session
        assert session is not None
        headers = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in scope["headers"] if n not in HOP_BY_HOP]
        target = scope.get("raw_path") or scope["path"].encode()
        if scope.get("query_string"):
            target += b"?" + scope["query_string"]
        url = URL(self._base + target.decode("latin-1"), encoded=True)
        has_body = any(n in (b"content-length", b"transfer-encoding") for n, _ in scope["headers"])
        body = _body(receive) if has_body else None
        try:
            async with session.request(scope["method"], url, headers=headers, data=body, allow_redirects=False) as r:
                out = [(n.lower(), v) for n, v in r.raw_headers if n.lower() not in HOP_BY_HOP]
                await send({"type": "http.response.start", "status": r.status, "headers": out})
                length = r.content_length
                if length is not None and length <= SMALL_BODY_BYTES:
                    await send({"type": "http.response.body", "body": await r.read()})
                    return
                async for chunk in r.content.iter_any():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b""})
        except (aiohttp.ClientError, OSError):
            await send({"type": "http.response.start", "status": 502, "headers": [(b"content-length", b"0")]})
            await send({"type": "http.response.body", "body": b""})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                connector = aiohttp.TCPConnector(limit=256, keepalive_timeout=30.0)
                self._session = aiohttp.ClientSession(
                    connector=connector,
                    auto_decompress=False,
                    cookie_jar=aiohttp.DummyCookieJar(),
                    skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
                )
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._session is not None:
                    await self._session.close()
                await send({"type": "lifespan.shutdown.complete"})
                return


async def _body(receive: Receive) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        chunk: bytes = message.get("body", b"")
        if chunk:
            yield chunk
        if not message.get("more_body", False):
            return


def main() -> None:
    parser = argparse.ArgumentParser(description="bare pass-through proxy (raw ASGI + aiohttp)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    args = parser.parse_args()
    uvicorn.run(
        BareProxy(args.upstream),
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        proxy_headers=False,
        access_log=False,
        server_header=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
