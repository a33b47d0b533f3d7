"""Wake-ups inside one engine: a broadcast ``Signal`` (anything changed: history followers
wait on it), and ``Watchers`` per instance (its status may have changed: ``wait()`` callers
wait on it, so that a busy engine does not wake every waiter on every step)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Hashable


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
    """``notify(key)`` releases everyone in ``wait(key)``; ``notify_all()`` everyone; and so
    does a tick every ``interval`` seconds while anyone waits, for changes made where no
    ``notify`` reaches (other processes), unless ``changed_elsewhere()`` says there were none.
    One shared timer: a thousand waiters with a timer each would cost the loop's timer heap
    more than their waking does."""

    __slots__ = ("_changed_elsewhere", "_far", "_interval", "_tick", "_tick_loop", "_waiting")

    def __init__(
        self, interval: float, changed_elsewhere: Callable[[], bool] = lambda: True
    ) -> None:
        self._interval = interval
        self._changed_elsewhere = changed_elsewhere
        self._waiting: dict[Hashable, list[asyncio.Future[None]]] = {}
        # Waits whose timeout ends after the next tick: a tick releases each once its end is
        # less than an interval away, and its caller waits again with a timer of its own.
        self._far: dict[asyncio.Future[None], float] = {}
        self._tick: asyncio.TimerHandle | None = None
        self._tick_loop: asyncio.AbstractEventLoop | None = None

    def notify(self, key: Hashable) -> None:
        futures = self._waiting.pop(key, None)
        if futures is not None:
            _release_all(futures)

    def notify_all(self) -> None:
        waiting, self._waiting = self._waiting, {}
        if self._tick is not None:  # (everyone waiting now will arm it again)
            self._tick.cancel()
            self._tick = None
        for futures in waiting.values():
            _release_all(futures)

    def _on_tick(self) -> None:
        self._tick = None
        loop = self._tick_loop
        try:
            quiet = not self._changed_elsewhere()
        except Exception:  # (say changed: the waiters look for themselves)
            quiet = False
        if not quiet or loop is None:
            self.notify_all()
            return
        now = loop.time()
        for future, end in list(self._far.items()):
            if end - now < self._interval:
                _release(future)
        if self._waiting:
            self._tick = loop.call_later(self._interval, self._on_tick)

    async def wait(self, key: Hashable, timeout: float | None = None) -> None:
        """Return on the next ``notify(key)``, ``notify_all()`` or tick that found changes
        elsewhere, or at the latest after ``timeout`` seconds: callers loop until what they
        wait for is there (a tick may release a long wait shortly before its end)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._waiting.setdefault(key, []).append(future)
        if self._tick is None or self._tick_loop is not loop:
            self._tick = loop.call_later(self._interval, self._on_tick)
            self._tick_loop = loop
        timer = None
        if timeout is not None:
            if timeout < self._interval:
                timer = loop.call_later(timeout, _release, future)
            else:
                self._far[future] = loop.time() + timeout
        try:
            await future
        finally:
            if timer is not None:
                timer.cancel()
            self._far.pop(future, None)
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
