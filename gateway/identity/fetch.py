"""Bounded JSON over HTTP for discovery documents and key sets: async, size-capped, no redirects."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

import aiohttp


class FetchError(Exception):
    """A discovery or key document could not be obtained or is unusable; the message names the URL."""


def origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    port = parts.port or {"https": 443, "http": 80}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), port


async def fetch_json_object(
    session: aiohttp.ClientSession, url: str, *, max_bytes: int, timeout_seconds: float
) -> dict[str, Any]:
    """GET ``url`` and parse a JSON object, or raise ``FetchError``.

    Redirects are never followed (a 3xx is a failure), the body is read in chunks and abandoned past
    ``max_bytes`` (after decompression, so a gzip bomb stops there too), and the whole exchange,
    connect included, is bounded by ``timeout_seconds``.
    """
    timeout = aiohttp.ClientTimeout(total=timeout_seconds)
    try:
        async with session.get(
            url, allow_redirects=False, timeout=timeout, headers={"Accept": "application/json"}
        ) as response:
            if response.status != 200:
                raise FetchError(f"{url} answered HTTP {response.status}")
            if response.content_length is not None and response.content_length > max_bytes:
                raise FetchError(f"{url} announced {response.content_length} bytes, over {max_bytes}")
            body = bytearray()
            async for chunk in response.content.iter_chunked(64 * 1024):
                body += chunk
                if len(body) > max_bytes:
                    raise FetchError(f"{url} sent more than {max_bytes} bytes")
    except TimeoutError as exc:
        raise FetchError(f"{url} did not answer within {timeout_seconds} s") from exc
    except aiohttp.ClientError as exc:
        raise FetchError(f"{url} failed: {type(exc).__name__}: {exc}") from exc
    try:
        document = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise FetchError(f"{url} did not return valid JSON") from exc
    if not isinstance(document, dict):
        raise FetchError(f"{url} did not return a JSON object")
    return document
