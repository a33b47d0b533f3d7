"""After writing to a sandbox, the host keeps its event loop polling for a moment (the answer
is usually microseconds away). That must work in every event loop, stop by itself, and never
keep a finished loop alive."""

from __future__ import annotations

import asyncio
import gc
import weakref

from sandbox import _host_pipes


async def _ticks_while_awake() -> tuple[bool, bool]:
    _host_pipes.keep_awake()
    awake = _host_pipes.AWAKE[asyncio.get_running_loop()]
    ticking_at_first = awake._ticking
    await asyncio.sleep(_host_pipes.KeepAwake.SECONDS * 20)  # long past the window
    return ticking_at_first, awake._ticking


async def _write_and_leave() -> None:
    _host_pipes.keep_awake()  # the loop ends inside the window, its ticker never finishing


def test_each_loop_keeps_awake_then_sleeps_again() -> None:
    for _ in range(3):  # a loop that ended mid-window must not disable the next ones
        asyncio.run(_write_and_leave())
        started, still = asyncio.run(_ticks_while_awake())
        assert started and not still


def test_a_finished_loop_is_not_kept_alive() -> None:
    loop = asyncio.new_event_loop()
    loop.run_until_complete(_ticks_while_awake())
    ref = weakref.ref(loop)
    loop.close()
    del loop
    gc.collect()
    assert ref() is None
