"""The upstream side of the sidecar: one shared aiohttp session, streaming both ways.

Design:
- One ``aiohttp.ClientSession`` per worker with a keep-alive pool (``upstream.pool_size``). aiohttp was
  measured about ten times faster than httpx as a proxy client on this kind of machine.
- Request bodies stream from the ASGI ``receive`` channel to the upstream without being buffered, with
  a running byte count that stops at ``server.max_body_bytes`` (413). Only a route that lifts JSON body
  fields into the authorization request buffers its body, bounded by the route map.
- Response bodies stream back chunk by chunk under uvicorn's flow control, so memory stays bounded
  whatever the upstream sends; small bodies with a known length are read in one piece (fewer sends).
  A response that must be masked is buffered up to ``upstream.max_masked_body_bytes``; past that the
  gateway refuses (502) rather than let unmasked data through.
- Compressed bodies pass through untouched (``auto_decompress=False``); when masking is needed the
  gateway asks the upstream for an identity encoding and refuses an encoded answer.
- Redirects are never followed: the client gets the upstream's 3xx as is.
- Failures before the response starts become problem+json: refused or reset connection 502, any
  timeout 504. After the response has started the only honest signal left is to cut the connection.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from gateway.config import UpstreamSettings
from gateway.request import HOP_BY_HOP

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

# Bodies up to this size with a known length are read whole and sent in one ASGI message.
SMALL_BODY_BYTES = 64 * 1024
# Date is the gateway server's own; content-length is recomputed or re-sent by the gateway; Server would
# name the upstream's software to every client.
RESPONSE_HOP_BY_HOP = HOP_BY_HOP | {b"content-length", b"date", b"server"}


class UpstreamError(Exception):
    """The upstream could not give an answer: ``status`` is 502 or 504."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class BodyTooLarge(Exception):
    pass


class ClientGone(Exception):
    pass


class RequestBody:
    """The client's request body as an async iterator, counted against a limit as it streams."""

    def __init__(self, receive: Receive, limit: int) -> None:
        self._receive = receive
        self._limit = limit
        self.received = 0

    async def read_all(self, limit: int) -> bytes:
        """Buffer the whole body, refusing more than ``limit`` bytes."""
        parts: list[bytes] = []
        async for chunk in self.stream(limit):
            parts.append(chunk)
        return b"".join(parts)

    async def stream(self, limit: int | None = None) -> AsyncIterator[bytes]:
        bound = self._limit if limit is None else min(limit, self._limit)
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                raise ClientGone()
            chunk: bytes = message.get("body", b"")
            if chunk:
                self.received += len(chunk)
                if self.received > bound:
                    raise BodyTooLarge()
                yield chunk
            if not message.get("more_body", False):
                return


class UpstreamClient:
    def __init__(self, settings: UpstreamSettings) -> None:
        self.settings = settings
        self.base = URL(settings.url.rstrip("/"))
        self._base_raw = str(self.base)
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(
            limit=self.settings.pool_size,
            ttl_dns_cache=300,
            keepalive_timeout=30.0,
            enable_cleanup_closed=False,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,
            timeout=aiohttp.ClientTimeout(
                total=None,
                sock_connect=self.settings.connect_timeout_seconds,
                sock_read=self.settings.read_timeout_seconds,
            ),
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
            cookie_jar=aiohttp.DummyCookieJar(),
            trust_env=False,
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("upstream client not started")
        return self._session

    async def open(
        self,
        method: str,
        target: str,
        headers: CIMultiDict[str],
        body: bytes | AsyncIterator[bytes] | None,
    ) -> aiohttp.ClientResponse:
        """Send the request and return once the upstream's status line and headers have arrived."""
        url = URL(self._base_raw + target, encoded=True)
        try:
            return await self.session.request(
                method,
                url,
                headers=headers,
                data=body,
                allow_redirects=False,
                compress=None,
                chunked=None,
            )
        except (BodyTooLarge, ClientGone):
            raise
        except aiohttp.ServerTimeoutError as exc:
            raise UpstreamError(504, f"upstream did not answer in time ({_describe(exc)})") from None
        except TimeoutError:
            raise UpstreamError(504, "upstream did not answer in time") from None
        except aiohttp.ClientConnectorError as exc:
            raise UpstreamError(502, f"upstream unreachable: {_describe(exc)}") from None
        except aiohttp.ClientError as exc:
            cause = exc.__cause__ or exc.__context__
            if isinstance(cause, BodyTooLarge | ClientGone):
                raise cause from None
            raise UpstreamError(502, f"upstream failed: {_describe(exc)}") from None
        except OSError as exc:
            raise UpstreamError(502, f"upstream failed: {exc.strerror or exc}") from None


def response_headers(response: aiohttp.ClientResponse) -> list[tuple[bytes, bytes]]:
    """The upstream's headers minus hop-by-hop ones, repeated headers (Set-Cookie) kept in order."""
    raw = response.raw_headers
    named: set[bytes] = set()
    for name, value in raw:
        if name.lower() == b"connection":
            named.update(t.strip().lower() for t in value.split(b","))
    out: list[tuple[bytes, bytes]] = []
    for name, value in raw:
        lowered = name.lower()
        if lowered in RESPONSE_HOP_BY_HOP or lowered in named:
            continue
        out.append((lowered, value))
    return out


async def relay_body(response: aiohttp.ClientResponse, send: Send) -> None:
    """Stream the upstream body to the client. Raises if the upstream breaks off mid-body."""
    length = response.content_length
    if length is not None and length <= SMALL_BODY_BYTES:
        body = await response.read()
        await send({"type": "http.response.body", "body": body, "more_body": False})
        return
    async for chunk in response.content.iter_any():
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def read_bounded(response: aiohttp.ClientResponse, limit: int) -> bytes | None:
    """The whole upstream body, or None if it is larger than ``limit`` bytes."""
    length = response.content_length
    if length is not None and length > limit:
        return None
    parts: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_any():
        size += len(chunk)
        if size > limit:
            return None
        parts.append(chunk)
    return b"".join(parts)


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return text if text else type(exc).__name__
