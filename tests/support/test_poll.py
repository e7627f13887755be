"""tests/support/poll.py: what it returns, when it gives up, and what it says then (on a fake clock)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest

from tests.support import poll
from tests.support.poll import wait_until, wait_until_async


@dataclass
class FakeClock:
    """Stands in for the module's ``time``: sleeping advances the clock, nothing else does."""

    now: float = 1000.0
    slept: list[float] = field(default_factory=list)

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeClock]:
    fake = FakeClock()
    monkeypatch.setattr(poll, "time", fake)

    async def fake_sleep(seconds: float) -> None:
        fake.sleep(seconds)

    monkeypatch.setattr(poll, "asyncio", SimpleNamespace(sleep=fake_sleep))
    yield fake


def test_returns_the_first_truthy_value(clock: FakeClock) -> None:
    values = iter([None, [], ["row"]])
    assert wait_until(lambda: next(values), message="a row") == ["row"]
    assert clock.slept == [poll.DEFAULT_INTERVAL] * 2


def test_gives_up_after_the_attempts_and_says_what_was_awaited(clock: FakeClock) -> None:
    calls = itertools.count(1)
    with pytest.raises(AssertionError) as raised:
        wait_until(lambda: next(calls) and 0, message="the store to hold 3 rows", attempts=4, timeout=60)
    assert next(calls) == 5  # called exactly four times
    assert str(raised.value).startswith("the store to hold 3 rows: not reached after 4 attempts")
    assert "last returned 0" in str(raised.value)


def test_a_message_function_describes_the_state_at_the_end(clock: FakeClock) -> None:
    seen: list[int] = []
    with pytest.raises(AssertionError, match=r"^statuses \[503, 503\]: not reached after 2 attempts"):
        wait_until(lambda: seen.append(503), message=lambda: f"statuses {seen}", attempts=2)


def test_gives_up_when_the_time_is_up(clock: FakeClock) -> None:
    calls = itertools.count(1)

    def slow() -> bool:
        next(calls)
        clock.now += 1.0  # each call takes a second
        return False

    with pytest.raises(AssertionError, match=r"ready: not reached after 3 attempts in 3\.1 s"):
        wait_until(slow, message="ready", timeout=3.0, interval=0.05)
    assert next(calls) == 4
    assert clock.slept == [0.05, 0.05]  # never past the deadline


def test_the_last_sleep_ends_at_the_deadline(clock: FakeClock) -> None:
    with pytest.raises(AssertionError):
        wait_until(lambda: False, message="never", timeout=0.25, interval=0.1)
    assert clock.slept == pytest.approx([0.1, 0.1, 0.05])


def test_ignored_errors_mean_not_yet_and_are_reported(clock: FakeClock) -> None:
    outcomes: Iterator[object] = iter([ConnectionRefusedError(111, "refused"), "up"])

    def connect() -> object:
        outcome = next(outcomes)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    assert wait_until(connect, message="the server", ignoring=(OSError,)) == "up"

    def refused() -> bool:
        raise ConnectionRefusedError(111, "refused")

    with pytest.raises(AssertionError, match=r"last raised ConnectionRefusedError") as raised:
        wait_until(refused, message="the server", attempts=2, ignoring=(OSError,))
    assert isinstance(raised.value.__cause__, ConnectionRefusedError)


def test_other_errors_propagate_at_once(clock: FakeClock) -> None:
    calls = itertools.count(1)

    def broken() -> bool:
        next(calls)
        raise KeyError("x")

    with pytest.raises(KeyError):
        wait_until(broken, message="x", ignoring=(OSError,))
    assert next(calls) == 2


@pytest.mark.parametrize(("timeout", "interval", "attempts"), [(0, 0.1, None), (1, 0, None), (1, 0.1, 0)])
def test_bounds_must_be_positive(timeout: float, interval: float, attempts: int | None) -> None:
    with pytest.raises(ValueError):
        wait_until(lambda: True, message="x", timeout=timeout, interval=interval, attempts=attempts)


def test_a_message_is_required() -> None:
    with pytest.raises(ValueError, match="say what is awaited"):
        wait_until(lambda: True, message="")


async def test_async_awaits_an_async_predicate(clock: FakeClock) -> None:
    values = iter([0, 0, 7])

    async def count() -> int:
        return next(values)

    assert await wait_until_async(count, message="seven") == 7
    assert clock.slept == [poll.DEFAULT_INTERVAL] * 2


async def test_async_takes_a_plain_predicate_and_fails_the_same_way(clock: FakeClock) -> None:
    assert await wait_until_async(lambda: "done", message="done") == "done"
    with pytest.raises(AssertionError, match="the spans: not reached after 3 attempts"):
        await wait_until_async(lambda: [], message="the spans", attempts=3)
