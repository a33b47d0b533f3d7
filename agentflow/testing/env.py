"""A test engine whose time jumps: sleeps, retries and timeouts pass at once, in order."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from ..clock import FakeClock
from ..engine import Engine
from ..records import InstanceDetails

_BUSY = ("queued", "running", "waiting_for_pause")


class TimeSkippingEnv:
    """Drives ``engine`` (opened with ``clock``, a :class:`FakeClock`): whenever nothing can
    run, the clock jumps to the next timer (a sleep's end, a retry, a wait's timeout), so a
    workflow that sleeps for days finishes in milliseconds, its timers firing in order."""

    def __init__(self, engine: Engine, clock: FakeClock) -> None:
        if not isinstance(clock, FakeClock):
            raise TypeError("TimeSkippingEnv needs the FakeClock the engine was opened with")
        self.engine = engine
        self.clock = clock
        self.skipped = 0.0  # fake seconds jumped over so far

    async def idle(self, *, timeout: float = 10.0) -> None:
        """Wait (in real time) until no instance is queued or running and no timer is due."""
        deadline = time.monotonic() + timeout
        while not await self._idle():
            if time.monotonic() > deadline:
                raise TimeoutError(f"the engine was still busy after {timeout:g} s")
            await asyncio.sleep(0.002)

    async def run_until_idle(self, *, max_jumps: int = 100_000, timeout: float = 30.0,
                             stop: Any = None) -> None:
        """Run everything that can run, jumping the clock to each next timer (sleeps,
        retries, and the timeouts of waits nobody answers), until nothing is left to run or
        to wake. ``stop`` (an async predicate) is checked before each jump."""
        for _ in range(max_jumps):
            await self.idle(timeout=timeout)
            if stop is not None and await stop():
                return
            when = await self._next_wake()
            if when is None:
                return
            self.skipped += max(0.0, when - self.clock.now())
            await self.clock.set(max(when, self.clock.now()))
        raise RuntimeError(f"still running after {max_jumps} clock jumps")

    async def run(self, instance: Any, *, until: str = "finished",
                  timeout: float = 30.0) -> InstanceDetails:
        """Run ``instance`` (and everything else), jumping time, and return its status.
        ``until="finished"`` jumps every timer, wait timeouts included; ``until="waiting"``
        stops as soon as the instance waits for an event or an approval (before its timeout
        is jumped), so the test can answer it."""
        if until not in ("finished", "waiting"):
            raise ValueError(f"until must be 'finished' or 'waiting', got {until!r}")
        inner = getattr(instance, "_instance", instance)  # a tenant's instance wraps one

        async def waits_for_an_event() -> bool:
            row = await self.engine._storage.get_instance_by_iid(inner._iid)
            return row is not None and row.status == "waiting" and bool(row.wait_types)

        await self.run_until_idle(timeout=timeout,
                                  stop=waits_for_an_event if until == "waiting" else None)
        details: InstanceDetails = await instance.status()
        return details

    async def send_event(self, instance: Any, type: str, payload: Any = None) -> None:
        await instance.send_event(type, payload)
        await self.run_until_idle()

    async def approve(self, instance: Any, gate: str | None = None, **decision: Any) -> None:
        await instance.approve(gate, **decision)
        await self.run_until_idle()

    async def reject(self, instance: Any, gate: str | None = None, **decision: Any) -> None:
        await instance.reject(gate, **decision)
        await self.run_until_idle()

    async def _idle(self) -> bool:
        engine = self.engine
        for status in _BUSY:
            if await engine._storage.list_instances(status=status, limit=1):
                return False
        when = await self._next_wake()
        return when is None or when > self.clock.now()

    async def _next_wake(self) -> float | None:
        return await self.engine._storage.next_wake(list(self.engine._workflows))


