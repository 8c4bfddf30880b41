"""`eventually()`: the one way tests wait for something another process (or Redis, or a thread) makes true."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


class NotYet(AssertionError):
    """What `eventually()` raises when the time is up: what was awaited, the last value and the last error."""


def _failure(what: str, timeout: float, last: object, error: BaseException | None) -> NotYet:
    detail = f"last error: {error!r}" if error is not None else f"last value: {last!r}"
    return NotYet(f"{what} not within {timeout}s ({detail})")


def eventually(
    predicate: Callable[[], T],
    *,
    timeout: float = 5.0,
    interval: float = 0.05,
    what: str = "the condition",
    ignoring: tuple[type[BaseException], ...] = (),
    check: Callable[[], None] | None = None,
) -> T:
    """Call `predicate` until it returns a truthy value, and return that value.

    `ignoring` names exceptions that count as "not yet" (a server still starting); `check` runs before each try and
    may raise to give up early (the process being waited on died). On timeout: `NotYet` with the last value or error.
    """
    deadline = time.monotonic() + timeout
    last: object = None
    error: BaseException | None = None
    while True:
        if check is not None:
            check()
        try:
            value = predicate()
        except ignoring as raised:
            error = raised
        else:
            if value:
                return value
            last, error = value, None
        if time.monotonic() >= deadline:
            raise _failure(what, timeout, last, error)
        time.sleep(interval)


async def eventually_async(
    predicate: Callable[[], Awaitable[T]],
    *,
    timeout: float = 5.0,
    interval: float = 0.05,
    what: str = "the condition",
    ignoring: tuple[type[BaseException], ...] = (),
) -> T:
    """`eventually()` for a coroutine function, waiting with `asyncio.sleep` so the event loop keeps running."""
    deadline = time.monotonic() + timeout
    last: object = None
    error: BaseException | None = None
    while True:
        try:
            value = await predicate()
        except ignoring as raised:
            error = raised
        else:
            if value:
                return value
            last, error = value, None
        if time.monotonic() >= deadline:
            raise _failure(what, timeout, last, error)
        await asyncio.sleep(interval)
