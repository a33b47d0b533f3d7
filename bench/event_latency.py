"""``send_event`` -> resumed step latency. Prints one JSON line.

M instances of a plan that waits on ``step.wait_for_event`` and then runs one ``step.do`` are
created and left to hibernate. Local: this process, which runs the embedded worker with the
engine's default poll interval, sends each instance its event and measures the time until the
body of the step right after the wait starts (the body records ``time.perf_counter()``; same
process, real clock), so the wake comes from the in-process notification, not from the poll.
Remote: a second process opens the same file without a worker and sends the events
(``engine.binding(name).get(id)`` then ``send_event``); the wake then comes from the worker's
poll, so the latency is bounded by the poll interval (reported). Each remote send is preceded
by a random pause in [0, poll interval) so that sends fall at random phases of the poll.

    python bench/event_latency.py [--instances 200] [--in-flight 1] [--remote-events 40]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import time
from typing import Any

from _common import environment, latency_summary, wait_until_hibernated

import agentflow as af

WORKFLOW = "bench"

# instance id -> (perf_counter, CLOCK_MONOTONIC) when the step after the wait started.
RESUMED: dict[str, tuple[float, float]] = {}
WAITERS: dict[str, asyncio.Future[None]] = {}


def _resumed(instance_id: str) -> None:
    RESUMED[instance_id] = (time.perf_counter(), time.clock_gettime(time.CLOCK_MONOTONIC))
    waiter = WAITERS.get(instance_id)
    if waiter is not None and not waiter.done():
        waiter.set_result(None)


async def plan(event: af.Event, step: af.Step) -> None:
    await step.wait_for_event("approval", type="approve", timeout="7 days")
    await step.do("after", lambda: _resumed(event.instance_id))


async def local(instances: list[af.Instance], in_flight: int) -> list[float]:
    """Send from this process, ``in_flight`` at a time; each sender waits for its instance to
    complete before the next send, so samples do not overlap their predecessor's tail."""
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    queue = list(reversed(instances))

    async def sender() -> None:
        while queue:
            instance = queue.pop()
            WAITERS[instance.id] = loop.create_future()
            start = time.perf_counter()
            await instance.send_event("approve", {"by": "bench"})
            await asyncio.wait_for(WAITERS[instance.id], 30)
            latencies.append(RESUMED[instance.id][0] - start)
            details = await instance.wait(timeout=30)
            assert details.status == "complete", details

    await asyncio.gather(*(sender() for _ in range(in_flight)))
    return latencies


async def remote(path: str, instances: list[af.Instance], poll: float) -> list[float]:
    """Send from a second process; one event at a time, after a random pause."""
    loop = asyncio.get_running_loop()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, os.path.abspath(__file__), "--sender", path,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdin is not None and proc.stdout is not None
    assert (await proc.stdout.readline()).strip() == b"ready"
    rng = random.Random(1)
    latencies: list[float] = []
    try:
        for instance in instances:
            await asyncio.sleep(rng.uniform(0, poll))
            WAITERS[instance.id] = loop.create_future()
            proc.stdin.write(f"{instance.id}\n".encode())
            await proc.stdin.drain()
            await asyncio.wait_for(WAITERS[instance.id], poll * 4 + 30)
            sent_id, sent_at = (await proc.stdout.readline()).decode().split()
            assert sent_id == instance.id
            latencies.append(RESUMED[instance.id][1] - float(sent_at))
            details = await instance.wait(timeout=30)
            assert details.status == "complete", details
    finally:
        proc.stdin.close()
        await proc.wait()
    return latencies


async def sender(path: str) -> None:
    """The second process: read ids on stdin, send each its event, print the send time
    (CLOCK_MONOTONIC, which is system-wide on Linux) just before ``send_event``."""
    loop = asyncio.get_running_loop()
    async with af.Engine.open(f"sqlite:///{path}", worker=False) as engine:
        binding = engine.binding(WORKFLOW)
        print("ready", flush=True)
        while line := await loop.run_in_executor(None, sys.stdin.readline):
            instance = await binding.get(line.strip())
            sent_at = time.clock_gettime(time.CLOCK_MONOTONIC)
            await instance.send_event("approve", {"by": "remote"})
            print(f"{instance.id} {sent_at!r}", flush=True)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--instances", type=int, default=200, help="local samples")
    parser.add_argument("--in-flight", type=int, default=1, help="local sends at a time")
    parser.add_argument("--remote-events", type=int, default=40, help="remote samples")
    parser.add_argument("--poll-interval", type=float, default=None,
                        help="the worker's poll interval (default: the engine's default)")
    parser.add_argument("--sender", metavar="DB", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sender:
        await sender(args.sender)
        return
    options: dict[str, Any] = {}
    if args.poll_interval is not None:
        options["poll_interval"] = args.poll_interval
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "b.db")
        async with af.Engine.open(f"sqlite:///{path}", **options) as engine:
            poll = float(getattr(engine, "_poll_interval", args.poll_interval or 0.5))
            binding = engine.register(WORKFLOW, plan)
            total = args.instances + args.remote_events
            instances = await binding.create_batch([{"id": f"i{i}"} for i in range(total)])
            await wait_until_hibernated(engine, WORKFLOW)
            local_ms = latency_summary(await local(instances[: args.instances], args.in_flight))
            remote_ms = (
                latency_summary(await remote(path, instances[args.instances :], poll))
                if args.remote_events else None
            )
    print(json.dumps({
        "bench": "event_latency", "in_flight": args.in_flight, "poll_interval_s": poll,
        "local": local_ms, "remote": remote_ms, **environment(),
    }))


if __name__ == "__main__":
    asyncio.run(main())
