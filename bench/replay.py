"""Replay time of a K-step journal (default 1,000). Prints one JSON line.

Instances of a plan that runs K ``step.do`` calls, then ``wait_for_event``, then one more step
are run to their wait and hibernate. Each is sent its event, and the time from ``send_event``
to the start of the step after the wait is measured: it includes the claim, loading the
journal, replaying the K cached steps and consuming the event. The same is measured for a plan
with no steps before its wait (the control), so the difference is the cost of the K steps;
``claim_to_first_step`` starts at the run's ``instance.started`` history record (written by
the claim) instead of at ``send_event``.

Direct: the journal of one hibernated instance is loaded and replayed through the engine's own
``Step`` without the worker (up to the wait, which finds no event and suspends; nothing is
written), timed over N runs: ``load_journal`` alone, and loading plus replay. Baseline: the
plan's K awaits against a bare in-memory step that returns memoized results.

    python bench/replay.py [--steps 1000] [--runs 5] [--direct-runs 20]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import statistics
import tempfile
import time
from typing import Any

from _common import environment, wait_until_hibernated

import agentflow as af
from agentflow._control import Suspend  # internal: the direct replay stops at the wait
from agentflow.runner import load_run  # internal: builds a run's state from its journal

WORKFLOW = "bench"

# instance id -> (perf_counter, time.time()) when the step after the wait started.
MARKS: dict[str, tuple[float, float]] = {}
WAITERS: dict[str, asyncio.Future[None]] = {}


def _mark(instance_id: str) -> None:
    MARKS[instance_id] = (time.perf_counter(), time.time())
    waiter = WAITERS.get(instance_id)
    if waiter is not None and not waiter.done():
        waiter.set_result(None)


async def _noop(ctx: af.StepContext) -> int:
    return ctx.count


async def plan(event: af.Event, step: af.Step) -> int:
    total = 0
    for _ in range(event.payload["steps"]):
        total += await step.do("step", _noop)
    await step.wait_for_event("go", type="go", timeout="7 days")
    await step.do("after", lambda: _mark(event.instance_id))
    return total


class _Suspended(Exception):
    pass


class _MemoStep:
    """The baseline: a step that returns memoized results, in memory."""

    def __init__(self, memo: dict[tuple[str, int], Any]) -> None:
        self.memo = memo
        self.counts: dict[str, int] = {}

    async def do(self, name: str, fn: Any, **_: object) -> Any:
        count = self.counts[name] = self.counts.get(name, 0) + 1
        key = (name, count)
        if key not in self.memo:
            self.memo[key] = await fn(af.StepContext(name, count, 1, None))  # type: ignore[arg-type]
        return self.memo[key]

    async def wait_for_event(self, name: str, *, type: str, timeout: object = None) -> Any:
        raise _Suspended()


async def baseline(k: int, runs: int) -> list[float]:
    memo: dict[tuple[str, int], Any] = {}
    event = af.Event({"steps": k}, None, "i", WORKFLOW)  # type: ignore[arg-type]
    times = []
    for i in range(runs + 1):
        start = time.perf_counter()
        with contextlib.suppress(_Suspended):
            await plan(event, _MemoStep(memo))  # type: ignore[arg-type]
        if i:  # the first run fills the memo
            times.append(time.perf_counter() - start)
    return times


async def direct(engine: af.Engine, instance: af.Instance, k: int, runs: int) -> dict[str, Any]:
    """Load and replay a hibernated instance's journal through the engine's Step, N times."""
    worker = engine._worker
    assert worker is not None
    ctx = worker.ctx
    row = await ctx.storage.get_instance_by_iid(instance._iid)
    assert row is not None and row.status == "waiting", row
    # As the next claim would: a new owner token and one more run.
    row = dataclasses.replace(row, owner="bench#replay", runs=row.runs + 1)
    event = af.Event({"steps": k}, None, row.id, WORKFLOW)  # type: ignore[arg-type]
    loads, replays = [], []
    for _ in range(runs):
        start = time.perf_counter()
        journal = await ctx.storage.load_journal(row.iid)
        loads.append(time.perf_counter() - start)
        assert len(journal) == k + 1, len(journal)
        start = time.perf_counter()
        state = await load_run(ctx, row)
        try:
            await plan(event, af.Step(state))
            raise AssertionError("the replay went past the wait")
        except Suspend:
            pass
        replays.append(time.perf_counter() - start)
    return {"load_journal": loads, "load_and_replay": replays}


async def wake(instance: af.Instance) -> tuple[float, float]:
    """(send_event -> first new step, claim -> first new step) in seconds."""
    WAITERS[instance.id] = asyncio.get_running_loop().create_future()
    start = time.perf_counter()
    await instance.send_event("go", None)
    await asyncio.wait_for(WAITERS[instance.id], 60)
    details = await instance.wait(timeout=60)
    assert details.status == "complete", details
    mark, mark_wall = MARKS[instance.id]
    started = [e async for e in instance.events(follow=False) if e.type == "instance.started"]
    return mark - start, mark_wall - started[-1].timestamp.timestamp()


def _ms(seconds: list[float]) -> dict[str, float]:
    return {
        "median_ms": round(statistics.median(seconds) * 1000, 3),
        "min_ms": round(min(seconds) * 1000, 3),
        "max_ms": round(max(seconds) * 1000, 3),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--steps", type=int, default=1000, help="journaled steps to replay")
    parser.add_argument("--runs", type=int, default=5, help="instances woken per plan")
    parser.add_argument("--direct-runs", type=int, default=20)
    args = parser.parse_args()
    k = args.steps
    with tempfile.TemporaryDirectory() as tmp:
        async with af.Engine.open(f"sqlite:///{os.path.join(tmp, 'b.db')}") as engine:
            binding = engine.register(WORKFLOW, plan)
            long = await binding.create_batch(
                [{"id": f"k{i}", "params": {"steps": k}} for i in range(args.runs)]
            )
            short = await binding.create_batch(
                [{"id": f"z{i}", "params": {"steps": 0}} for i in range(args.runs)]
            )
            await wait_until_hibernated(engine, WORKFLOW)
            direct_times = await direct(engine, long[0], k, args.direct_runs)
            woken = [await wake(i) for i in long]
            control = [await wake(i) for i in short]
    base = await baseline(k, args.direct_runs)
    send_k = _ms([w[0] for w in woken])
    send_0 = _ms([w[0] for w in control])
    replay = _ms(direct_times["load_and_replay"])
    base_ms = _ms(base)
    print(json.dumps({
        "bench": "replay", "steps": k, "runs": args.runs, "direct_runs": args.direct_runs,
        "send_to_first_step": send_k,
        "claim_to_first_step": _ms([w[1] for w in woken]),
        "control_send_to_first_step": send_0,
        "control_claim_to_first_step": _ms([w[1] for w in control]),
        "replay_cost_ms": round(send_k["median_ms"] - send_0["median_ms"], 3),
        "direct_load_journal": _ms(direct_times["load_journal"]),
        "direct_load_and_replay": replay,
        "baseline_memo_replay": base_ms,
        "ratio_to_baseline": round(replay["median_ms"] / base_ms["median_ms"], 1),
        **environment(),
    }))


if __name__ == "__main__":
    asyncio.run(main())
