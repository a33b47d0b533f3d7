"""Per-attempt timeouts for many steps at once, at a fixed resolution.

A loop timer per step attempt (``asyncio.timeout``) costs more than a typical step. Instead,
running attempts register here; one ticker, alive only while attempts run, cancels those past
their deadline every ``resolution`` seconds of real time, reading the engine's clock so that a
fake clock's jumps count.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from .clock import Clock

T = TypeVar("T")

RESOLUTION = 0.02


class DeadlineExceeded(Exception):
    """The attempt ran past its deadline (never raised for a TimeoutError from the body)."""


class _Entry:
    __slots__ = ("expired", "task", "when")

    def __init__(self, when: float, task: asyncio.Task[object]) -> None:
        self.when = when
        self.task = task
        self.expired = False


class Deadlines:
    def __init__(self, clock: Clock, resolution: float = RESOLUTION) -> None:
        self._clock = clock
        self._resolution = resolution
        self._active: set[_Entry] = set()
        self._ticker: asyncio.Task[None] | None = None

    async def run(self, awaitable: Awaitable[T], seconds: float) -> T:
        """Await ``awaitable``; raise :class:`DeadlineExceeded` if it takes over ``seconds``."""
        task = asyncio.current_task()
        if task is None:  # a coroutine run eagerly, outside any task: give it one
            return await asyncio.ensure_future(self.run(awaitable, seconds))
        entry = _Entry(self._clock.now() + seconds, task)
        self._active.add(entry)
        if self._ticker is None:
            self._ticker = asyncio.get_running_loop().create_task(self._tick())
        try:
            return await awaitable
        except asyncio.CancelledError:
            if entry.expired and task.uncancel() == 0:
                raise DeadlineExceeded() from None
            raise
        finally:
            self._active.discard(entry)
            if entry.expired and task.cancelling():  # the body swallowed the cancellation
                task.uncancel()

    async def _tick(self) -> None:
        try:
            while self._active:
                await asyncio.sleep(self._resolution)
                now = self._clock.now()
                for entry in list(self._active):
                    if not entry.expired and entry.when <= now:
                        entry.expired = True
                        entry.task.cancel()
        finally:
            self._ticker = None

    def close(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
