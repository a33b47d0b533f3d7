"""Time, swappable: the system clock in production, a fake one in tests.

The engine reads time only through a :class:`Clock`, and schedules only through
``Clock.call_at``, so that a :class:`FakeClock` makes hours of sleep pass at once.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable
from typing import Protocol


class Cancellable(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the epoch."""
        ...

    def call_at(self, when: float, callback: Callable[[], None]) -> Cancellable:
        """Call ``callback`` on the running loop once ``now() >= when``."""
        ...


class SystemClock:
    """Wall-clock time, scheduled on the running event loop."""

    def now(self) -> float:
        return time.time()

    def call_at(self, when: float, callback: Callable[[], None]) -> Cancellable:
        loop = asyncio.get_running_loop()
        return loop.call_later(max(0.0, when - time.time()), callback)


class _FakeTimer:
    __slots__ = ("callback", "cancelled")

    def __init__(self, callback: Callable[[], None]) -> None:
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeClock:
    """A clock that moves only when told to (``advance``/``set``), firing due timers in order."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = float(start)
        self._timers: list[tuple[float, int, _FakeTimer]] = []
        self._order = itertools.count()

    def now(self) -> float:
        return self._now

    def call_at(self, when: float, callback: Callable[[], None]) -> Cancellable:
        timer = _FakeTimer(callback)
        heapq.heappush(self._timers, (when, next(self._order), timer))
        if when <= self._now:
            asyncio.get_running_loop().call_soon(self._fire_due)
        return timer

    def next_timer(self) -> float | None:
        """When the earliest pending timer fires, if any."""
        while self._timers and self._timers[0][2].cancelled:
            heapq.heappop(self._timers)
        return self._timers[0][0] if self._timers else None

    async def advance(self, seconds: float) -> None:
        await self.set(self._now + seconds)

    async def set(self, when: float) -> None:
        """Move time forward to ``when``, stopping at each timer so work woken by it runs first."""
        while (due := self.next_timer()) is not None and due <= when:
            self._now = max(self._now, due)
            self._fire_due()
            await _settle()
        self._now = max(self._now, when)
        await _settle()

    def _fire_due(self) -> None:
        while self._timers and self._timers[0][0] <= self._now:
            _, _, timer = heapq.heappop(self._timers)
            if not timer.cancelled:
                timer.cancelled = True
                timer.callback()


async def _settle() -> None:
    # Let callbacks and the tasks they wake run a few turns of the loop.
    for _ in range(5):
        await asyncio.sleep(0)
