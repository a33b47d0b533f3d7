"""RSS of a worker process holding N hibernated instances. Prints one JSON line.

For each N (a fresh subprocess per N, so numbers do not mix) the worker opens an engine on a
fresh SQLite file, registers the workflow and reads its RSS (the baseline), creates N instances
with ``create_batch`` in chunks, waits until every one has run to its ``wait_for_event`` (or
its day-long ``sleep``) and hibernated, and reads its RSS again: the delta per instance is what
a hibernated instance costs the process that created and ran it. A second fresh worker then
opens the same file with the N instances already hibernated, polls for a few intervals and
reports its RSS (what a restarted worker pays). The baseline for comparison is the same plan
without durability: N asyncio tasks suspended on a future, also in a fresh subprocess.

    python bench/hibernated_rss.py                          # N = 1,000, 10,000 and 100,000
    python bench/hibernated_rss.py --instances 100000 [--kind wait|sleep]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

from _common import count_status, environment, rss_kib, wait_until_hibernated

import agentflow as af

WORKFLOW = "bench"


async def wait_plan(event: af.Event, step: af.Step) -> Any:
    got = await step.wait_for_event("approval", type="approve", timeout="7 days")
    return got.payload


async def sleep_plan(event: af.Event, step: af.Step) -> None:
    await step.sleep("a day", "1 day")


PLANS = {"wait": wait_plan, "sleep": sleep_plan}


class _BareStep:
    """The in-memory baseline's step: waits and sleeps suspend the coroutine on a future."""

    __slots__ = ("future",)

    def __init__(self) -> None:
        self.future: asyncio.Future[Any] | None = None

    async def wait_for_event(self, name: str, *, type: str, timeout: object = None) -> Any:
        self.future = asyncio.get_running_loop().create_future()
        return await self.future

    async def sleep(self, name: str, duration: object) -> None:
        self.future = asyncio.get_running_loop().create_future()
        await self.future


def _kib_fields(prefix: str) -> dict[str, int]:
    gc.collect()
    rss, hwm = rss_kib()
    return {f"{prefix}_rss_kib": rss, f"{prefix}_hwm_kib": hwm}


async def create_child(path: str, n: int, kind: str, chunk: int, concurrency: int) -> None:
    """Create N hibernating instances on a fresh file and report this process's RSS."""
    out: dict[str, Any] = {}
    async with af.Engine.open(f"sqlite:///{path}") as engine:
        engine.register(WORKFLOW, PLANS[kind], concurrency=concurrency)
        binding = engine.workflow(WORKFLOW)
        out.update(_kib_fields("before"))
        start = time.perf_counter()
        for first in range(0, n, chunk):
            items = [{"params": {"i": i}} for i in range(first, min(n, first + chunk))]
            await binding.create_batch(items)
        await wait_until_hibernated(engine, WORKFLOW)
        out["seconds"] = round(time.perf_counter() - start, 3)
        out.update(_kib_fields("after"))
        waiting = await count_status(engine, WORKFLOW, "waiting", n + 1)  # after measuring
        assert waiting == n, f"{waiting} of {n} instances are waiting"
    print(json.dumps(out), flush=True)


async def reopen_child(path: str, n: int, kind: str, concurrency: int, polls: int) -> None:
    """Open a store that already holds N hibernated instances and report this worker's RSS."""
    out: dict[str, Any] = {}
    poll = 0.5
    async with af.Engine.open(f"sqlite:///{path}", poll_interval=poll) as engine:
        engine.register(WORKFLOW, PLANS[kind], concurrency=concurrency)
        await asyncio.sleep(poll * polls)  # let the worker scan the store a few times
        await wait_until_hibernated(engine, WORKFLOW)
        out.update(_kib_fields("reopened"))
    print(json.dumps(out), flush=True)


async def memory_child(n: int, kind: str) -> None:
    """The baseline: N tasks running the plan, suspended on a future, no durability."""
    out = _kib_fields("before")
    tasks = []
    for i in range(n):
        event = af.Event({"i": i}, None, f"i{i}", WORKFLOW)  # type: ignore[arg-type]
        tasks.append(asyncio.create_task(PLANS[kind](event, _BareStep())))  # type: ignore[arg-type]
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert all(not t.done() for t in tasks)
    out.update(_kib_fields("after"))
    print(json.dumps(out), flush=True)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _child(*args: str) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), *args], capture_output=True, text=True,
        timeout=900,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"child {args} failed ({proc.returncode}):\n{proc.stderr}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def _per_instance_bytes(before_kib: int, after_kib: int, n: int) -> float:
    return round((after_kib - before_kib) * 1024 / n, 1)


def measure(n: int, kind: str, chunk: int, concurrency: int, polls: int) -> dict[str, Any]:
    common = ["--kind", kind, "--instances", str(n), "--concurrency", str(concurrency)]
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "b.db")
        created = _child("--child", "create", "--db", path, "--chunk", str(chunk), *common)
        reopened = _child("--child", "reopen", "--db", path, "--polls", str(polls), *common)
        db_bytes = sum(
            os.path.getsize(os.path.join(tmp, f)) for f in os.listdir(tmp)
        )
    memory = _child("--child", "memory", *common)
    base = created["before_rss_kib"]
    return {
        "instances": n,
        "seconds_to_hibernate": created["seconds"],
        "rss_before_mib": round(base / 1024, 1),
        "rss_after_mib": round(created["after_rss_kib"] / 1024, 1),
        "peak_rss_mib": round(created["after_hwm_kib"] / 1024, 1),
        "delta_per_instance_bytes": _per_instance_bytes(base, created["after_rss_kib"], n),
        "reopened_rss_mib": round(reopened["reopened_rss_kib"] / 1024, 1),
        "reopened_delta_per_instance_bytes": _per_instance_bytes(
            base, reopened["reopened_rss_kib"], n
        ),
        "db_bytes_per_instance": round(db_bytes / n),
        "baseline_in_memory_rss_after_mib": round(memory["after_rss_kib"] / 1024, 1),
        "baseline_in_memory_per_instance_bytes": _per_instance_bytes(
            memory["before_rss_kib"], memory["after_rss_kib"], n
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--instances", default="1000,10000,100000",
                        help="comma-separated sizes; each runs in a fresh subprocess")
    parser.add_argument("--kind", choices=sorted(PLANS), default="wait",
                        help="instances wait for an event (7-day timeout) or sleep a day")
    parser.add_argument("--chunk", type=int, default=1000, help="create_batch chunk size")
    parser.add_argument("--concurrency", type=int, default=1000, help="the workflow's limit")
    parser.add_argument("--polls", type=int, default=3,
                        help="poll intervals the reopened worker runs before measuring")
    parser.add_argument("--child", choices=["create", "reopen", "memory"], help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "create":
        asyncio.run(create_child(args.db, int(args.instances), args.kind, args.chunk,
                                 args.concurrency))
        return
    if args.child == "reopen":
        asyncio.run(reopen_child(args.db, int(args.instances), args.kind, args.concurrency,
                                 args.polls))
        return
    if args.child == "memory":
        asyncio.run(memory_child(int(args.instances), args.kind))
        return
    sizes = [int(s) for s in args.instances.split(",")]
    results = [measure(n, args.kind, args.chunk, args.concurrency, args.polls) for n in sizes]
    print(json.dumps({
        "bench": "hibernated_rss", "kind": args.kind, "chunk": args.chunk,
        "concurrency": args.concurrency, "results": results, **environment(),
    }))


if __name__ == "__main__":
    main()
