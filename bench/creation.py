"""Creation rate of instances that go straight to ``step.wait_for_event`` (they hibernate),
created three ways, each on a fresh SQLite file: ``create()`` awaited one at a time,
``asyncio.gather`` of all the ``create()`` calls, and ``create_batch`` in chunks. For each way
it reports the rate at which the create calls return and the rate until every instance is
'waiting' (claimed, run to its wait and hibernated by the embedded worker, which runs them
while they are being created), and the rate of the create calls alone in a process with no
worker (``worker=False``, as an API process would; nobody runs them). The baseline is the
same plan, without durability, started as N asyncio tasks whose ``wait_for_event`` awaits a
future, timed until all N are suspended at their wait. Prints one JSON line.

    python bench/creation.py [--instances 10000] [--chunk 1000] [--concurrency 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from collections.abc import Awaitable, Callable
from typing import Any

from _common import count_status, environment, wait_until_hibernated

import agentflow as af

WORKFLOW = "bench"
WAYS = ("sequential", "gather", "batch")


async def plan(event: af.Event, step: af.Step) -> Any:
    got = await step.wait_for_event("approval", type="approve", timeout="7 days")
    return got.payload


class _BareStep:
    """The baseline's step: ``wait_for_event`` suspends the coroutine on a future."""

    __slots__ = ("arrived", "future")

    def __init__(self, arrived: Callable[[], None]) -> None:
        self.arrived = arrived
        self.future: asyncio.Future[Any] | None = None

    async def wait_for_event(self, name: str, *, type: str, timeout: object = None) -> Any:
        self.future = asyncio.get_running_loop().create_future()
        self.arrived()
        return await self.future


async def baseline(n: int) -> tuple[float, float]:
    """(seconds until N tasks are created, seconds until all N wait on their future)."""
    reached = 0
    all_there = asyncio.get_running_loop().create_future()

    def arrived() -> None:
        nonlocal reached
        reached += 1
        if reached == n:
            all_there.set_result(None)

    start = time.perf_counter()
    tasks = []
    for i in range(n):
        event = af.Event({"i": i}, None, f"i{i}", WORKFLOW)  # type: ignore[arg-type]
        tasks.append(asyncio.create_task(plan(event, _BareStep(arrived))))  # type: ignore[arg-type]
    created = time.perf_counter()
    await all_there
    waiting = time.perf_counter()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return created - start, waiting - start


def _creator(
    way: str, binding: af.WorkflowBinding, n: int, chunk: int,
) -> Callable[[], Awaitable[None]]:
    async def sequential() -> None:
        for i in range(n):
            await binding.create(params={"i": i})

    async def gather() -> None:
        await asyncio.gather(*(binding.create(params={"i": i}) for i in range(n)))

    async def batch() -> None:
        for first in range(0, n, chunk):
            items = [{"params": {"i": i}} for i in range(first, min(n, first + chunk))]
            await binding.create_batch(items)

    return {"sequential": sequential, "gather": gather, "batch": batch}[way]


async def store_only(way: str, n: int, chunk: int, path: str) -> float:
    """Creates per second with no worker in the process (an API process; nothing runs them)."""
    async with af.Engine.open(f"sqlite:///{path}", worker=False) as engine:
        create = _creator(way, engine.binding(WORKFLOW), n, chunk)
        start = time.perf_counter()
        await create()
        seconds = time.perf_counter() - start
        queued = await count_status(engine, WORKFLOW, "queued", n + 1)
        assert queued == n, f"{way}: {queued} of {n} instances are queued"
    return n / seconds


async def durable(way: str, n: int, chunk: int, concurrency: int, path: str) -> dict[str, Any]:
    async with af.Engine.open(f"sqlite:///{path}") as engine:
        binding = engine.register(WORKFLOW, plan, concurrency=concurrency)
        create = _creator(way, binding, n, chunk)
        start = time.perf_counter()
        await create()
        created = time.perf_counter()
        hibernated = await wait_until_hibernated(engine, WORKFLOW)
        waiting = await count_status(engine, WORKFLOW, "waiting", n + 1)
        assert waiting == n, f"{way}: {waiting} of {n} instances are waiting"
    create_s, waiting_s = created - start, hibernated - start
    return {
        "create_seconds": round(create_s, 3),
        "creates_per_second": round(n / create_s),
        "to_waiting_seconds": round(waiting_s, 3),
        "to_waiting_per_second": round(n / waiting_s),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--instances", type=int, default=10_000)
    parser.add_argument("--chunk", type=int, default=1000, help="create_batch chunk size")
    parser.add_argument("--concurrency", type=int, default=1000, help="the workflow's limit")
    parser.add_argument("--ways", default=",".join(WAYS), help="comma-separated subset")
    args = parser.parse_args()
    n = args.instances
    base_create, base_waiting = await baseline(n)
    result: dict[str, Any] = {
        "bench": "creation", "instances": n, "chunk": args.chunk,
        "concurrency": args.concurrency,
        "baseline_creates_per_second": round(n / base_create),
        "baseline_to_waiting_per_second": round(n / base_waiting),
    }
    for way in args.ways.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            numbers = await durable(way, n, args.chunk, args.concurrency,
                                    os.path.join(tmp, "b.db"))
            rate = await store_only(way, n, args.chunk, os.path.join(tmp, "s.db"))
            numbers["store_only_creates_per_second"] = round(rate)
        numbers["ratio_to_baseline"] = round(
            result["baseline_to_waiting_per_second"] / numbers["to_waiting_per_second"], 1
        )
        result[way] = numbers
    result.update(environment())
    print(json.dumps(result))


if __name__ == "__main__":
    asyncio.run(main())
