"""A small bounded LRU map (dict order as recency), for decisions and entity handles."""

from __future__ import annotations

from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class LRU(Generic[K, V]):
    __slots__ = ("_data", "capacity", "hits", "misses")

    def __init__(self, capacity: int) -> None:
        self.capacity = max(0, capacity)
        self._data: dict[K, V] = {}
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: K) -> V | None:
        data = self._data
        value = data.pop(key, None)
        if value is None:
            self.misses += 1
            return None
        data[key] = value  # most recent last
        self.hits += 1
        return value

    def put(self, key: K, value: V) -> None:
        if self.capacity == 0:
            return
        data = self._data
        data.pop(key, None)
        data[key] = value
        if len(data) > self.capacity:
            del data[next(iter(data))]

    def clear(self) -> None:
        self._data.clear()
