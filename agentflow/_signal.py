"""Wake-ups inside one engine: a broadcast ``Signal`` (anything changed: history followers
wait on it), and ``Watchers`` per instance (its status may have changed: ``wait()`` callers
wait on it, so that a busy engine does not wake every waiter on every step)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Hashable


class Signal:
    """``notify()`` releases everyone currently in ``wait()``."""

    __slots__ = ("_future",)

    def __init__(self) -> None:
        self._future: asyncio.Future[None] | None = None

    def notify(self) -> None:
        future, self._future = self._future, None
        if future is not None and not future.done():
            future.set_result(None)

    async def wait(self, timeout: float | None = None) -> None:
        """Return on the next ``notify()`` or after ``timeout`` seconds, whichever is first."""
        if self._future is None:
            self._future = asyncio.get_running_loop().create_future()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._future), timeout)


class Watchers:
    """``notify(key)`` releases everyone in ``wait(key, ...)``; ``notify_all()`` everyone."""

    __slots__ = ("_waiting",)

    def __init__(self) -> None:
        self._waiting: dict[Hashable, list[asyncio.Future[None]]] = {}

    def notify(self, key: Hashable) -> None:
        futures = self._waiting.pop(key, None)
        if futures is not None:
            _release_all(futures)

    def notify_all(self) -> None:
        waiting, self._waiting = self._waiting, {}
        for futures in waiting.values():
            _release_all(futures)

    async def wait(self, key: Hashable, timeout: float) -> None:
        """Return on the next ``notify(key)`` or ``notify_all()``, or after ``timeout``
        seconds, whichever is first."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._waiting.setdefault(key, []).append(future)
        timer = loop.call_later(timeout, _release, future)
        try:
            await future
        finally:
            timer.cancel()
            futures = self._waiting.get(key)
            if futures is not None and future in futures:  # (timed out, or cancelled)
                futures.remove(future)
                if not futures:
                    del self._waiting[key]


def _release(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _release_all(futures: list[asyncio.Future[None]]) -> None:
    for future in futures:
        _release(future)
