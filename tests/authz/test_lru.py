"""``gateway.authz.lru.LRU``: least recently used goes first, 0 remembers nothing, hits are counted."""

from __future__ import annotations

from gateway.authz.lru import LRU


def test_the_least_recently_used_entry_goes_first() -> None:
    cache: LRU[str, int] = LRU(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # a is now the most recent
    cache.put("c", 3)
    assert (cache.get("a"), cache.get("b"), cache.get("c"), len(cache)) == (1, None, 3, 2)
    assert (cache.hits, cache.misses) == (3, 1)


def test_capacity_zero_remembers_nothing() -> None:
    cache: LRU[str, int] = LRU(0)
    cache.put("a", 1)
    assert cache.get("a") is None and len(cache) == 0 and cache.misses == 1
    cache = LRU(-5)
    cache.put("a", 1)
    assert len(cache) == 0


def test_clear() -> None:
    cache: LRU[tuple[str, int], str] = LRU(8)
    for i in range(8):
        cache.put(("k", i), str(i))
    cache.clear()
    assert len(cache) == 0 and cache.get(("k", 1)) is None
