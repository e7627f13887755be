"""Waiting for something that happens in another thread or process: one helper for every test.

``wait_until(predicate, message=...)`` calls ``predicate`` until it returns a truthy value and returns
that value. It gives up when ``timeout`` seconds have passed *or* after ``attempts`` calls, whichever
comes first, with an ``AssertionError`` that says what was awaited, how long and how often it was
tried, and what the predicate last returned or raised; ``message`` may be a function, called then, to
describe the state the wait ended in. The count bound matters where sleeps return
early (a fast-forwarding event loop) and the time bound where each call is slow.

A poll is for "eventually": never for "not before" or "not during". Where the waiting is the thing
under test (a cooldown, a timeout, a window for a duplicate to show), a sleep stays a sleep.
"""

from __future__ import annotations

import asyncio
import inspect
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

T = TypeVar("T")

DEFAULT_TIMEOUT = 10.0
DEFAULT_INTERVAL = 0.05

Message = str | Callable[[], str]


class _Poll:
    """The bookkeeping shared by the sync and async loops: bounds, the last outcome, the failure."""

    def __init__(
        self, message: Message, timeout: float, interval: float, attempts: int | None,
        ignoring: tuple[type[BaseException], ...],
    ) -> None:  # fmt: skip
        if not message:
            raise ValueError("say what is awaited: message must not be empty")
        if timeout <= 0 or interval <= 0:
            raise ValueError(f"timeout and interval must be positive, not {timeout} and {interval}")
        self.message = message
        self.timeout = timeout
        self.interval = interval
        # the count bound leaves room for calls that take no time at all and sleeps that return early
        self.attempts = attempts if attempts is not None else 2 * math.ceil(timeout / interval) + 1
        if self.attempts < 1:
            raise ValueError(f"attempts must be at least 1, not {self.attempts}")
        self.ignoring = ignoring
        self.started = time.monotonic()
        self.tried = 0
        self.last: object = None
        self.error: BaseException | None = None

    def record(self, value: object) -> None:
        self.tried += 1
        self.last, self.error = value, None

    def record_error(self, error: BaseException) -> None:
        self.tried += 1
        self.last, self.error = None, error

    def pause(self) -> float | None:
        """How long to sleep before the next call; None when a bound is reached."""
        left = self.started + self.timeout - time.monotonic()
        if self.tried >= self.attempts or left <= 0:
            return None
        return min(self.interval, left)

    def failure(self) -> AssertionError:
        elapsed = time.monotonic() - self.started
        last = f"raised {self.error!r}" if self.error is not None else f"returned {self.last!r}"
        what = self.message() if callable(self.message) else self.message
        text = f"{what}: not reached after {self.tried} attempts in {elapsed:.1f} s (last {last})"
        failure = AssertionError(text)
        failure.__cause__ = self.error
        return failure


def wait_until(
    predicate: Callable[[], T | None],
    *,
    message: Message,
    timeout: float = DEFAULT_TIMEOUT,
    interval: float = DEFAULT_INTERVAL,
    attempts: int | None = None,
    ignoring: tuple[type[BaseException], ...] = (),
) -> T:
    """Call ``predicate`` until it returns a truthy value, and return that value.

    ``ignoring``: exceptions that mean "not yet" (e.g. ``OSError`` while a server starts); any other
    exception propagates at once. Raises ``AssertionError`` naming ``message`` when a bound is reached.
    """
    poll = _Poll(message, timeout, interval, attempts, ignoring)
    while True:
        try:
            value = predicate()
        except poll.ignoring as error:
            poll.record_error(error)
        else:
            if value:
                return value
            poll.record(value)
        pause = poll.pause()
        if pause is None:
            raise poll.failure()
        time.sleep(pause)


@overload
async def wait_until_async(
    predicate: Callable[[], Awaitable[T | None]], *, message: Message, timeout: float = ..., interval: float = ...,
    attempts: int | None = ..., ignoring: tuple[type[BaseException], ...] = ...,
) -> T: ...


@overload
async def wait_until_async(
    predicate: Callable[[], T | None], *, message: Message, timeout: float = ..., interval: float = ...,
    attempts: int | None = ..., ignoring: tuple[type[BaseException], ...] = ...,
) -> T: ...


async def wait_until_async(
    predicate: Callable[[], Any],
    *,
    message: Message,
    timeout: float = DEFAULT_TIMEOUT,
    interval: float = DEFAULT_INTERVAL,
    attempts: int | None = None,
    ignoring: tuple[type[BaseException], ...] = (),
) -> Any:
    """``wait_until`` for a running event loop: sleeps with ``asyncio.sleep`` so the loop keeps
    serving, and awaits ``predicate``'s result when it is awaitable (an ``async def`` predicate)."""
    poll = _Poll(message, timeout, interval, attempts, ignoring)
    while True:
        try:
            outcome = predicate()
            value = await outcome if inspect.isawaitable(outcome) else outcome
        except poll.ignoring as error:
            poll.record_error(error)
        else:
            if value:
                return value
            poll.record(value)
        pause = poll.pause()
        if pause is None:
            raise poll.failure()
        await asyncio.sleep(pause)
