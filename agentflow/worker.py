"""The embedded worker: claims runnable instances, runs them, keeps their leases, and wakes
for timers (through the engine's clock), local pokes, and a poll for other processes' writes."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from .run_state import FLUSH_STARTED_AFTER, RunState
from .runner import RunContext, execute, load_run
from .storage import InstanceRow, StartNow
from .workflow import Runner

log = logging.getLogger("agentflow.worker")


@dataclass(frozen=True)
class WorkerConfig:
    poll_interval: float = 0.5
    lease_seconds: float = 30.0


@dataclass(eq=False)
class _ActiveRun:
    row: InstanceRow
    task: asyncio.Task[None] | None = None
    state: RunState | None = None
    stopping: bool = False


@dataclass(eq=False)
class Worker:
    ctx: RunContext
    config: WorkerConfig
    limits: Callable[[], dict[str, int]]
    code_for: Callable[[str], Runner]
    tenant_limits: Callable[[], dict[str, int | None]] = dict
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    _runs: dict[int, _ActiveRun] = field(default_factory=dict)
    _poked: bool = False
    _waiter: asyncio.Future[None] | None = None
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _closing: bool = False

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._schedule_loop(), name=f"agentflow-worker-{self.id[:8]}"),
            asyncio.create_task(self._lease_loop(), name=f"agentflow-leases-{self.id[:8]}"),
            asyncio.create_task(self._flush_loop(), name=f"agentflow-history-{self.id[:8]}"),
        ]

    def poke(self) -> None:
        """Something may have become runnable: claim now rather than at the next poll."""
        self._poked = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- signals to running instances -----------------------------------------------------
    def stop_run(self, iid: int) -> None:
        """The instance was terminated or restarted: abandon its run now."""
        active = self._runs.get(iid)
        if active is None:
            return
        active.stopping = True
        if active.state is not None:
            active.state.stopped = True
        if active.task is not None:
            active.task.cancel()

    def set_pause(self, iid: int, requested: bool) -> None:
        active = self._runs.get(iid)
        if active is not None and active.state is not None:
            active.state.pause_requested = requested

    # -- scheduling -----------------------------------------------------------------------
    async def _schedule_loop(self) -> None:
        clock = self.ctx.clock
        while not self._closing:
            self._poked = False
            claimed_at = clock.now()
            try:
                await self._claim(claimed_at)
                next_wake = await self.ctx.storage.next_wake(list(self.limits()))
            except Exception:  # keep the worker alive through transient storage errors
                log.exception("agentflow worker: claim failed; retrying")
                next_wake = None
            # A wake time that was already due at the claim belongs to an instance waiting
            # for a slot: a run that ends pokes the loop, so a timer for it would only spin.
            # One that fell due since (a short sleep, a slow read) fires at once.
            timer = (
                clock.call_at(next_wake, self.poke)
                if next_wake is not None and next_wake > claimed_at else None
            )
            await self._sleep_until_poked()
            if timer is not None:
                timer.cancel()

    async def _sleep_until_poked(self) -> None:
        """Until a poke, or the poll interval. (A future and a timer: ``asyncio.wait_for``
        of an event made a task per wait, and a run's end waits here once.)"""
        if self._poked:
            return
        loop = asyncio.get_running_loop()
        self._waiter = waiter = loop.create_future()
        poll = loop.call_later(self.config.poll_interval, self.poke)
        try:
            await waiter
        finally:
            poll.cancel()
            self._waiter = None

    async def _claim(self, now: float) -> None:
        limits = self.limits()
        if not limits:
            return
        lease_now = time.time()
        rows = await self.ctx.storage.claim(
            self.id, now, lease_now, lease_now + self.config.lease_seconds,
            limits, self.tenant_limits(),
        )
        self.adopt(rows)

    def start_now(self, workflow: str) -> StartNow | None:
        """For new instances of ``workflow``: start them at once (see ``StartNow``) when this
        worker runs the workflow and claims its instances in plain queue order (a workflow
        with tenant quotas is left to the fair claim)."""
        limit = self.limits().get(workflow)
        if self._closing or limit is None or workflow in self.tenant_limits():
            return None
        return StartNow(self.id, time.time() + self.config.lease_seconds, limit)

    def adopt(self, rows: list[InstanceRow], *, soon: bool = False) -> None:
        """Run instances claimed for this worker (none once it is closing: its release, which
        comes after their claim, hands them back). ``soon``: their runs start at the next
        turn of the loop, after whoever is waiting for them to be created goes on."""
        if self._closing or not rows:
            return
        adopted = []
        for row in rows:
            active = _ActiveRun(row)
            self._runs[row.iid] = active
            adopted.append(active)
        if soon:
            asyncio.get_running_loop().call_soon(self._start_runs, adopted)
        else:
            self._start_runs(adopted)

    def _start_runs(self, adopted: list[_ActiveRun]) -> None:
        for active in adopted:
            if self._runs.get(active.row.iid) is not active or self._closing:
                continue  # claimed anew, or the worker closed, before it started
            if active.stopping:  # terminated or restarted before it started
                del self._runs[active.row.iid]
                continue
            active.task = asyncio.create_task(self._run(active),
                                              name=f"agentflow-run-{active.row.id}")
            self.ctx.notify(active.row.iid)  # ('instance.started' is in its feed)

    async def _run(self, active: _ActiveRun) -> None:
        try:
            active.state = await load_run(self.ctx, active.row)
            if active.stopping:
                return
            await execute(self.ctx, active.row, active.state, self.code_for(active.row.workflow))
        except asyncio.CancelledError:
            if not active.stopping and not self._closing:
                raise
        except Exception:
            log.exception("agentflow worker: run of %s failed", active.row.id)
        finally:
            if self._runs.get(active.row.iid) is active:  # a restart may have claimed it anew
                del self._runs[active.row.iid]
            self.poke()

    # -- leases ---------------------------------------------------------------------------
    async def _lease_loop(self) -> None:
        interval = self.config.lease_seconds / 3
        while not self._closing:
            await asyncio.sleep(interval)
            owners = {iid: a.row.owner for iid, a in self._runs.items() if a.row.owner}
            try:
                statuses = await self.ctx.storage.renew(
                    self.id, owners, time.time() + self.config.lease_seconds
                )
            except Exception:
                log.exception("agentflow worker: lease renewal failed")
                continue
            for iid, status in statuses.items():
                if status not in ("running", "waiting_for_pause"):
                    self.stop_run(iid)
                else:
                    self.set_pause(iid, status == "waiting_for_pause")

    async def _flush_loop(self) -> None:
        """Write the 'started' history of steps that run long, so followers see them."""
        while not self._closing:
            await asyncio.sleep(FLUSH_STARTED_AFTER)
            now = time.monotonic()
            for state in list(self.ctx.busy_runs):
                if now - state.busy_since >= FLUSH_STARTED_AFTER:
                    try:
                        await state.flush_history()
                    except Exception:
                        log.exception("agentflow worker: writing history failed")

    # -- shutdown -------------------------------------------------------------------------
    async def close(self) -> None:
        """Stop claiming, abandon running instances at their last checkpoint, release them."""
        self._closing = True
        for task in self._tasks:
            task.cancel()
        runs = [a.task for a in self._runs.values() if a.task is not None]
        for task in runs:
            task.cancel()
        await asyncio.gather(*self._tasks, *runs, return_exceptions=True)
        self.ctx.deadlines.close()
        await self.ctx.storage.release(self.id, None, self.ctx.clock.now())
