"""UUIDv7 decision ids: RFC 9562 layout, time prefix, strictly increasing, unique across threads."""

from __future__ import annotations

import threading
import time
import uuid

from gateway.audit.ids import uuid7, uuid7_time


def test_layout_is_rfc9562_version_7() -> None:
    value = uuid.UUID(uuid7())
    assert value.version == 7
    assert value.variant == uuid.RFC_4122
    assert str(value) == str(value).lower()


def test_timestamp_prefix_is_the_current_millisecond() -> None:
    before = time.time_ns() // 1_000_000
    value = uuid7()
    after = time.time_ns() // 1_000_000
    assert before <= round(uuid7_time(value) * 1000) <= after + 1


def test_strictly_increasing_within_a_millisecond_and_across() -> None:
    ids = [uuid7() for _ in range(50_000)]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    # many ids share a millisecond: the counter, not the clock, keeps them ordered
    assert len({i[:13] for i in ids}) < len(ids)


def test_unique_across_threads() -> None:
    results: list[list[str]] = [[] for _ in range(4)]

    def produce(out: list[str]) -> None:
        out.extend(uuid7() for _ in range(10_000))

    threads = [threading.Thread(target=produce, args=(out,)) for out in results]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    every = [i for out in results for i in out]
    assert len(set(every)) == 40_000
    for out in results:
        assert out == sorted(out)
