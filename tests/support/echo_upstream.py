"""A raw-ASGI upstream for proxy tests, behaving by the last path segment.

- ``.../echo-*`` (default): JSON describing what arrived: method, path, raw path, query, headers
  (repeated ones kept), body size and SHA-256.
- ``.../big-*`` (or ``.../big-*/results``): streams ``?size=`` bytes (default 32 MiB) in 64 KiB chunks,
  chunked encoding.
- ``.../slow-*``: waits ``?delay=`` seconds before answering.
- ``.../hang-*``: never answers (bounded by the test's own timeouts).
- ``.../cookies-*``: two Set-Cookie headers, plus hop-by-hop headers that must not reach the client.
- ``.../broken-*``: starts a long body and breaks off mid-way.
- ``.../card-*``: a payment-shaped JSON with a card number.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from typing import Any
from urllib.parse import parse_qs

CHUNK = b"x" * 65536


async def echo_upstream(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    assert scope["type"] == "http"
    segments = scope["path"].rstrip("/").split("/")
    # the behaviour is named by the last segment, or by the record id before a last literal segment
    # (``/surveys/big-1/results``), so routes that end in a literal can ask for it too
    last = segments[-1] if len(segments) < 2 or "-" in segments[-1] else segments[-2]
    query = {k: v[0] for k, v in parse_qs(scope.get("query_string", b"").decode()).items()}
    digest = hashlib.sha256()
    size = 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        digest.update(chunk)
        if not message.get("more_body"):
            break

    async def json_response(doc: Any, status: int = 200, extra: list[tuple[bytes, bytes]] | None = None) -> None:
        # a record the gateway may pass on: created now, its subject not opted out of marketing
        doc = {"created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "marketing_opt_out": False, **doc}
        body = json.dumps(doc).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers + (extra or [])})
        await send({"type": "http.response.body", "body": body})

    if last.startswith("big"):
        total = int(query.get("size", 32 * 1024 * 1024))
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/octet-stream")]})
        sent = 0
        while sent < total:
            piece = CHUNK[: min(len(CHUNK), total - sent)]
            sent += len(piece)
            await send({"type": "http.response.body", "body": piece, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    if last.startswith("slow"):
        await asyncio.sleep(float(query.get("delay", "1")))
        await json_response({"slow": True})
        return
    if last.startswith("hang"):
        await asyncio.sleep(float(query.get("delay", "60")))
        await json_response({"hung": True})
        return
    if last.startswith("cookies"):
        await json_response(
            {"cookies": True},
            extra=[
                (b"set-cookie", b"a=1; Path=/"),
                (b"set-cookie", b"b=2; Path=/"),
                (b"connection", b"x-upstream-hop"),
                (b"x-upstream-hop", b"secret"),
                (b"keep-alive", b"timeout=5"),
                (b"x-kept", b"yes"),
            ],
        )
        return
    if last.startswith("broken"):
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/octet-stream"), (b"content-length", b"10000000")]})
        await send({"type": "http.response.body", "body": CHUNK, "more_body": True})
        raise RuntimeError("upstream breaks off mid-body (on purpose)")
    if last.startswith("card"):
        await json_response({"id": last, "card_number": "4111111111111111", "expiry": "12/29",
                             "billing_address": "1 Main St", "amount": 12.5, "currency": "EUR"})
        return
    await json_response(
        {
            "method": scope["method"],
            "path": scope["path"],
            "raw_path": (scope.get("raw_path") or b"").decode("latin-1"),
            "query": scope.get("query_string", b"").decode("latin-1"),
            "headers": [[n.decode("latin-1"), v.decode("latin-1")] for n, v in scope["headers"]],
            "body_size": size,
            "body_sha256": digest.hexdigest(),
        }
    )
