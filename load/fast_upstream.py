"""The minimal fast upstream: fixed JSON for any path, as cheaply as Python on uvloop can answer.

It exists so that a measurement of a proxy in front of it shows the proxy's cost, not the upstream's.
It is an ``asyncio.Protocol`` on uvloop with the httptools parser (what uvicorn uses underneath) and no
ASGI layer: each complete request gets one precomputed response written in one ``transport.write``.

Bodies look like the reference services' so the gateway's route maps and masking apply: a path with
``/payments/`` gets a payment (with a ``card_number``), ``/contacts/`` a contact, ``/gmail/`` a message
list, anything else a small generic object. Request bodies are parsed and discarded. Keep-alive is
the default; ``Connection: close`` and HTTP/1.0 close after the answer.

Run: ``python load/fast_upstream.py --port P``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
from datetime import UTC, datetime, timedelta
from typing import Any

import httptools

STARTED = datetime.now(UTC).replace(microsecond=0)


def _days_ago(days: int) -> str:
    """A time ``days`` before start: the records keep their ages (within retention) on any date."""
    return (STARTED - timedelta(days=days, hours=3)).strftime("%Y-%m-%dT%H:%M:%SZ")


PAYMENT = {
    "id": "pay-contoso-01",
    "contact_id": "ct-contoso-03",
    "cardholder": "Ada Lovelace",
    "card_number": "4111111111111111",
    "expiry": "04/29",
    "billing_address": {
        "street": "12 Maple Street",
        "city": "Seattle",
        "postal_code": "98101",
        "country": "US",
    },
    "amount": 129.5,
    "currency": "USD",
    "description": "Invoice INV-4821",
    "status": "captured",
    "created_at": _days_ago(80),
}
CONTACT = {
    "id": "ct-contoso-01",
    "name": "Ada Lovelace",
    "email": "ada.lovelace@northwind.example",
    "phone": "+1 206 555 0101",
    "company": "Northwind",
    "marketing_opt_out": False,
    "created_at": _days_ago(600),
}
MESSAGES = {"messages": [{"id": "18c2a1f0b3d4e5f6", "threadId": "18c2a1f0b3d4e5f6"}], "resultSizeEstimate": 1}
# Any other record (call metadata, ...): recent, so retention rules let it through.
GENERIC = {"ok": True, "id": "item-01", "items": [], "created_at": _days_ago(40)}
HEALTH = {"status": "ok"}


def _response(body: dict[str, Any], keep_alive: bool) -> bytes:
    payload = json.dumps(body, separators=(",", ":")).encode()
    head = (
        "HTTP/1.1 200 OK\r\n"
        "content-type: application/json\r\n"
        f"content-length: {len(payload)}\r\n" + ("" if keep_alive else "connection: close\r\n") + "\r\n"
    )
    return head.encode() + payload


# (keep-alive answer, closing answer) per body kind, built once.
ANSWERS: dict[str, tuple[bytes, bytes]] = {
    name: (_response(body, True), _response(body, False))
    for name, body in (
        ("payment", PAYMENT),
        ("contact", CONTACT),
        ("messages", MESSAGES),
        ("generic", GENERIC),
        ("health", HEALTH),
    )
}


def answer_kind(url: bytes) -> str:
    if b"/payments/" in url:
        return "payment"
    if b"/contacts/" in url:
        return "contact"
    if url.startswith(b"/gmail/"):
        return "messages"
    if url.startswith(b"/healthz"):
        return "health"
    return "generic"


class FixedJsonProtocol(asyncio.Protocol):
    """One connection: parse requests with httptools, answer each with a precomputed response."""

    __slots__ = ("_parser", "_transport", "_url")

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpRequestParser(self)
        self._url = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCPTransport is not an asyncio.Transport subclass, but has the same methods.
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            if self._transport is not None:
                self._transport.write(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                self._transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None

    # httptools callbacks
    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_message_complete(self) -> None:
        transport = self._transport
        if transport is None:
            return
        keep_alive = self._parser.should_keep_alive()
        answers = ANSWERS[answer_kind(self._url)]
        self._url = b""
        transport.write(answers[0] if keep_alive else answers[1])
        if not keep_alive:
            transport.close()


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(FixedJsonProtocol, host, port, backlog=1024, reuse_address=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description="minimal fast upstream answering fixed JSON")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.run(serve(args.host, args.port))
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
