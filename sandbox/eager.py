"""Coroutines run eagerly: up to their first wait at once, in the caller, and only the rest
(if they wait at all) on the event loop. Starting a task costs a turn of the loop (tens of
microseconds here) before its first line runs; a coroutine that answers at once need not pay
it. (The engine's step bodies use this too.)"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Coroutine, Generator
from typing import Any


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


def spawn(coroutine: Coroutine[Any, Any, None]) -> asyncio.Task[Any] | None:
    """Run ``coroutine`` as a task would, in a copy of the current context, but eagerly: None
    if it finished before waiting, else the task that runs the rest of it."""
    context = contextvars.copy_context()
    try:
        first = context.run(coroutine.send, None)
    except StopIteration:
        return None
    return asyncio.get_running_loop().create_task(
        _rest(Resumed(coroutine, first)), context=context)
