"""Message handlers run eagerly: up to their first wait at once, in the caller, and only the
rest (if they wait at all) as a task. Starting a task costs a turn of the event loop (tens of
microseconds here) before its first line runs; a handler that answers at once need not pay it.

Code run this way has no current task until its first wait: only code known not to need one
(``asyncio.timeout``, and ``asyncio.wait_for`` from Python 3.12, do) may be spawned here.
"""

from __future__ import annotations

import asyncio
import contextvars
import types
from collections.abc import Coroutine, Generator
from typing import Any


@types.coroutine
def _continue(coroutine: Coroutine[Any, Any, Any], first: Any) -> Generator[Any, Any, Any]:
    """Drive ``coroutine`` on from where it yielded ``first``: what the loop sends or throws
    goes in, what the coroutine yields comes out."""
    outgoing = first
    while True:
        thrown: BaseException | None = None
        try:
            incoming = yield outgoing
        except GeneratorExit:
            coroutine.close()
            raise
        except BaseException as error:  # cancellation and errors the loop throws in
            thrown = error
        try:
            outgoing = coroutine.send(incoming) if thrown is None else coroutine.throw(thrown)
        except StopIteration as finished:
            return finished.value


async def _rest(coroutine: Coroutine[Any, Any, Any], first: Any) -> Any:
    return await _continue(coroutine, first)


def spawn(coroutine: Coroutine[Any, Any, None]) -> asyncio.Task[Any] | None:
    """Run ``coroutine`` as a task would, in a copy of the current context, but eagerly: None
    if it finished before waiting, else the task that runs the rest of it."""
    context = contextvars.copy_context()
    try:
        first = context.run(coroutine.send, None)
    except StopIteration:
        return None
    return asyncio.get_running_loop().create_task(_rest(coroutine, first), context=context)
