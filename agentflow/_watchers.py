"""Wake-ups per instance: for ``Instance.wait()`` (its status may have changed) and for
``Instance.events(follow=True)`` (its feed grew).

``notify(key)`` wakes the waiters of one instance; ``notify_all()`` wakes everyone (the engine
closed, another process announced changes). A broadcast to everyone on every change would
make a thousand waiters each re-read their row on every commit of a busy engine. For changes
no notify reaches (other processes, other engines on the file), one tick per event loop every
``interval`` seconds wakes everyone, unless the store's ``version()`` is the same as at the
last tick (nobody else wrote; None: the store cannot tell). One tick rather than a timer per
waiter: a thousand timers cost the loop's timer heap more than the waking does.

A waiter arms before it reads the state it waits on (``arm``, read, ``wait``, ``disarm``):
a change committed after the read is notified after the arming, so no wake-up is lost.
Waiters may sit on the loops of several threads; they are released on their own loop.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Hashable


class Watchers:
    __slots__ = ("_far", "_interval", "_seen", "_ticks", "_version", "_waiting")

    def __init__(
        self, interval: float, version: Callable[[], int | None] = lambda: None
    ) -> None:
        self._interval = interval
        self._version = version
        self._seen: int | None = None  # the version at the last tick
        self._waiting: dict[Hashable, list[asyncio.Future[None]]] = {}
        # Waits whose timeout ends after the next tick: a tick releases each once its end is
        # less than an interval away, and its caller waits again with a timer of its own.
        self._far: dict[asyncio.Future[None], float] = {}
        self._ticks: dict[asyncio.AbstractEventLoop, asyncio.TimerHandle] = {}

    def start(self) -> None:
        """Take the store's version now (once it is open): the first tick compares with it."""
        self._seen = self._version()

    def notify(self, key: Hashable) -> None:
        futures = self._waiting.pop(key, None)
        if futures is not None:
            for future in futures:
                _release(future)

    def notify_all(self) -> None:
        waiting, self._waiting = self._waiting, {}
        for futures in waiting.values():
            for future in futures:
                _release(future)

    def arm(self, key: Hashable) -> asyncio.Future[None]:
        """Register for the next wake-up of ``key``; then read, then ``wait`` on it."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(key, []).append(future)
        return future

    async def wait(self, armed: asyncio.Future[None], timeout: float | None = None) -> None:
        """Return on the next wake-up of ``armed``, or at the latest after ``timeout``
        seconds: callers loop until what they wait for is there (a tick may release a long
        wait shortly before its end)."""
        loop = armed.get_loop()
        if loop not in self._ticks:
            self._start_tick(loop)
        timer = None
        if timeout is not None:
            if timeout < self._interval:
                timer = loop.call_later(timeout, _release, armed)
            else:
                self._far[armed] = loop.time() + timeout
        try:
            await armed
        finally:
            if timer is not None:
                timer.cancel()

    def disarm(self, key: Hashable, armed: asyncio.Future[None]) -> None:
        self._far.pop(armed, None)
        futures = self._waiting.get(key)
        if futures is not None and armed in futures:  # (not woken: timed out, or cancelled)
            futures.remove(armed)
            if not futures:
                self._waiting.pop(key, None)

    def _start_tick(self, loop: asyncio.AbstractEventLoop) -> None:
        for old in [old for old in self._ticks if old.is_closed()]:
            del self._ticks[old]
        self._ticks[loop] = loop.call_later(self._interval, self._on_tick, loop)

    def _on_tick(self, loop: asyncio.AbstractEventLoop) -> None:
        self._ticks.pop(loop, None)
        try:
            version = self._version()
        except Exception:  # (say changed: the waiters look for themselves)
            version = None
        quiet, self._seen = version is not None and version == self._seen, version
        if not quiet:
            self.notify_all()
            return
        now = loop.time()
        for future, end in list(self._far.items()):
            if end - now < self._interval and future.get_loop() is loop:
                _release(future)
        if any(future.get_loop() is loop and not future.done()
               for futures in list(self._waiting.values()) for future in futures):
            self._start_tick(loop)


def _release(future: asyncio.Future[None]) -> None:
    """Wake ``future``'s waiter on its own loop; nothing if its loop is gone."""
    loop = future.get_loop()
    if future.done() or loop.is_closed():
        return
    if loop is asyncio._get_running_loop():
        future.set_result(None)
        return
    with contextlib.suppress(RuntimeError):  # (closed meanwhile)
        loop.call_soon_threadsafe(_set_if_pending, future)


def _set_if_pending(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
