"""An ASGI wrapper in front of the dev IdP that misbehaves on demand and counts what it is asked.

Faults are set per kind of document (``metadata`` or ``keys``) from the test thread and read by the
server thread; each is one immutable tuple, so a plain dict assignment is enough.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from typing import Any

Fault = tuple[Any, ...]


def _kind(path: str) -> str:
    if path.endswith("/openid-configuration"):
        return "metadata"
    if "/discovery/" in path:
        return "keys"
    return "other"


class FaultyAuthority:
    """Faults: ``("delay", seconds)``, ``("garbage",)``, ``("status", code)``, ``("redirect", url)``,
    ``("huge", n_bytes)`` (with Content-Length), ``("huge_stream", n_bytes)`` (chunked, no length),
    ``("jwks_uri", url)`` (metadata naming another key set URL)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.faults: dict[str, Fault] = {}
        self.requests: Counter[str] = Counter()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        kind = _kind(scope["path"])
        self.requests[kind] += 1
        fault = self.faults.get(kind)
        if fault is None:
            await self.app(scope, receive, send)
            return
        name = fault[0]
        if name == "delay":
            await asyncio.sleep(fault[1])
            await self.app(scope, receive, send)
        elif name == "garbage":
            await _respond(send, 200, b'{"keys": [ this is not json', b"application/json")
        elif name == "status":
            await _respond(send, fault[1], b"{}", b"application/json")
        elif name == "redirect":
            await _respond(send, 302, b"", b"text/plain", [(b"location", fault[1].encode())])
        elif name == "huge":
            await _respond(send, 200, b'{"pad": "' + b"x" * fault[1] + b'"}', b"application/json")
        elif name == "huge_stream":
            await _stream(send, fault[1])
        elif name == "jwks_uri":
            await self._rewrite_jwks_uri(scope, receive, send, fault[1])
        else:
            raise AssertionError(f"unknown fault {fault!r}")

    async def _rewrite_jwks_uri(self, scope: Any, receive: Any, send: Any, url: str) -> None:
        captured: list[Any] = []

        async def capture(message: Any) -> None:
            captured.append(message)

        await self.app(scope, receive, capture)
        body = b"".join(m.get("body", b"") for m in captured if m["type"] == "http.response.body")
        document = json.loads(body)
        document["jwks_uri"] = url
        await _respond(send, 200, json.dumps(document).encode(), b"application/json")


async def _respond(
    send: Any, status: int, body: bytes, content_type: bytes, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode()), *(extra or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _stream(send: Any, size: int) -> None:
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]}
    )
    chunk = b" " * 65536
    try:
        for _ in range(size // len(chunk) + 1):
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"{}"})
    except Exception:  # the client hung up once it had read enough: the point of the fault
        return
