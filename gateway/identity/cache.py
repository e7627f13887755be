"""Verified tokens, remembered by hash until their ``exp`` and never past it.

Keyed by SHA-256 of the token, so the cache holds no token and a collision is not a practical
concern. Bounded: when full, the oldest insertion goes (FIFO is enough: entries expire on their own
within a token lifetime, and an LRU reorder would cost every hit). Each entry remembers the tenant
and ``kid`` that verified it, so a key the authority withdraws stops its cached tokens at the next
key refresh, not at their ``exp``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from gateway.identity.principal import Principal


@dataclass(frozen=True, slots=True)
class CachedToken:
    principal: Principal
    expires_at: float
    tenant: str
    kid: str


def token_digest(token: bytes) -> bytes:
    return hashlib.sha256(token).digest()


class TokenCache:
    def __init__(self, max_entries: int) -> None:
        self._max_entries = max_entries
        self._entries: dict[bytes, CachedToken] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, digest: bytes, now: float) -> CachedToken | None:
        entry = self._entries.get(digest)
        if entry is not None and now >= entry.expires_at:
            del self._entries[digest]
            return None
        return entry

    def discard(self, digest: bytes) -> None:
        self._entries.pop(digest, None)

    def put(self, digest: bytes, entry: CachedToken) -> None:
        if self._max_entries <= 0:
            return
        if digest not in self._entries and len(self._entries) >= self._max_entries:
            del self._entries[next(iter(self._entries))]
        self._entries[digest] = entry
