"""Coroutines run eagerly: up to their first wait at once, in the caller, and the rest on the
event loop. Starting a task costs a turn of the loop before its first line runs, and puts
that line behind everything already queued. (The sandbox host has its own copy of the relay:
the engine imports nothing from the sandbox.)"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Coroutine, Generator
from typing import Any, TypeVar

T = TypeVar("T")


class Resumed:
    """A coroutine already run to its first wait, as an awaitable: it hands the event loop
    what the coroutine yielded, then relays everything (results, cancellation) both ways."""

    __slots__ = ("_coroutine", "_first")

    def __init__(self, coroutine: Coroutine[Any, Any, Any], first: Any) -> None:
        self._coroutine = coroutine
        self._first = first

    def __await__(self) -> Generator[Any, Any, Any]:
        coroutine, message = self._coroutine, self._first
        while True:
            try:
                sent = yield message
            except GeneratorExit:
                coroutine.close()
                raise
            except BaseException as exc:  # cancellation and errors the loop throws in
                try:
                    message = coroutine.throw(exc)
                except StopIteration as done:
                    return done.value
            else:
                try:
                    message = coroutine.send(sent)
                except StopIteration as done:
                    return done.value


async def _rest(resumed: Resumed) -> Any:
    return await resumed


def start_eagerly(coroutine: Coroutine[Any, Any, T]) -> asyncio.Future[T]:
    """A task for ``coroutine`` whose first part (up to its first wait) has already run."""
    loop = asyncio.get_running_loop()
    try:
        first = coroutine.send(None)
    except StopIteration as done:
        finished: asyncio.Future[T] = loop.create_future()
        finished.set_result(done.value)
        return finished
    except BaseException as error:
        failed: asyncio.Future[T] = loop.create_future()
        failed.set_exception(error)
        return failed
    return loop.create_task(_rest(Resumed(coroutine, first)))


def as_future(awaitable: Awaitable[T]) -> asyncio.Future[T]:
    """``awaitable`` as a future: itself when it is one, a coroutine started eagerly."""
    if isinstance(awaitable, asyncio.Future):
        return awaitable
    if isinstance(awaitable, Coroutine):
        return start_eagerly(awaitable)
    return asyncio.ensure_future(awaitable)
