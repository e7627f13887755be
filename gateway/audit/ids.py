"""UUIDv7 decision ids (RFC 9562): time-ordered, and strictly increasing within this process.

Layout: 48-bit Unix milliseconds, version 7, then 74 bits that start random at each new millisecond
and count up by one within it (RFC 9562 section 6.2, method 2 with a randomly seeded counter). When the
clock stands still or goes back, the previous millisecond is kept and the counter goes on, so ids never
repeat nor go backwards here; if the counter overflows, the timestamp is advanced by one millisecond.
The random seed keeps only 73 bits so that a millisecond has room for 2**73 more ids.
"""

from __future__ import annotations

import random
import threading
import time

_COUNTER_BITS = 74
_COUNTER_LIMIT = 1 << _COUNTER_BITS
_RAND_B_MASK = (1 << 62) - 1
_VERSION_VARIANT = (0x7 << 76) | (0b10 << 62)

_lock = threading.Lock()
_last_ms = 0
_counter = 0
_random = random.Random()  # seeded from os.urandom; a separate instance so tests seeding ``random`` don't repeat ids


def uuid7() -> str:
    """A new UUIDv7 in canonical lower-case form, greater than every id this process made before."""
    global _last_ms, _counter
    now_ms = time.time_ns() // 1_000_000
    with _lock:
        if now_ms > _last_ms:
            _last_ms = now_ms
            _counter = _random.getrandbits(_COUNTER_BITS - 1)
        else:
            _counter += 1
            if _counter >= _COUNTER_LIMIT:
                _last_ms += 1
                _counter = _random.getrandbits(_COUNTER_BITS - 1)
        ms, counter = _last_ms, _counter
    value = (ms << 80) | _VERSION_VARIANT | ((counter >> 62) << 64) | (counter & _RAND_B_MASK)
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def uuid7_time(value: str) -> float:
    """Seconds since the epoch encoded in a UUIDv7 (millisecond precision)."""
    return int(value.replace("-", "")[:12], 16) / 1000.0
