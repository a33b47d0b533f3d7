"""W(N workflows x K steps): steps per second through the durable engine, and the same code
run in-process without durability as the baseline. Prints one JSON line.

    python bench/throughput.py --workflows 1000 --steps 10 [--mode concurrent|sequential]
        [--wait each|together] [--create batch|gather|each]

``--wait together`` awaits every instance's ``wait()`` at once (``asyncio.gather``), as an
app waiting on a fan-out would; ``each`` (the default) awaits them one after another.
``--create`` makes the instances with one ``create_batch`` (the default), with
``asyncio.gather`` of N ``create()`` calls, or with N ``create()`` calls awaited one by one
(the instances created first run their steps meanwhile).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import tempfile
import time

import agentflow as af


async def _noop(ctx: af.StepContext) -> int:
    return ctx.count


async def plan(event: af.Event, step: af.Step) -> int:
    total = 0
    for _ in range(event.payload["steps"]):
        total += await step.do("step", _noop)
    return total


class _Bare:
    """The baseline: the same plan against a step object that only calls the body."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    async def do(self, name: str, fn: object, **_: object) -> object:
        self.counts[name] = self.counts.get(name, 0) + 1
        ctx = af.StepContext(name, self.counts[name], 1, None)  # type: ignore[arg-type]
        return await fn(ctx)  # type: ignore[operator]


async def baseline(n: int, k: int, concurrent: bool) -> float:
    start = time.perf_counter()
    events = [af.Event({"steps": k}, None, str(i), "bench") for i in range(n)]  # type: ignore[arg-type]
    if concurrent:
        await asyncio.gather(*(plan(e, _Bare()) for e in events))  # type: ignore[arg-type]
    else:
        for e in events:
            await plan(e, _Bare())  # type: ignore[arg-type]
    return time.perf_counter() - start


async def _create(binding: af.WorkflowBinding, n: int, k: int, how: str) -> list[af.Instance]:
    params = {"steps": k}
    if how == "each":
        return [await binding.create(params=params) for _ in range(n)]
    if how == "gather":
        return list(await asyncio.gather(*(binding.create(params=params) for _ in range(n))))
    return await binding.create_batch([{"params": params} for _ in range(n)])


async def durable(n: int, k: int, concurrent: bool, path: str, together: bool = False,
                  create: str = "batch") -> float:
    async with af.Engine.open(f"sqlite:///{path}", poll_interval=0.05) as engine:
        binding = engine.register("bench", plan, concurrency=n if concurrent else 1)
        start = time.perf_counter()
        instances = await _create(binding, n, k, create)
        if together:
            finished = await asyncio.gather(*(i.wait(timeout=600) for i in instances))
        else:
            finished = [await instance.wait(timeout=600) for instance in instances]
        assert all(d.status == "complete" and d.output == k * (k + 1) // 2 for d in finished)
        return time.perf_counter() - start


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workflows", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--mode", choices=["concurrent", "sequential"], default="concurrent")
    parser.add_argument("--wait", choices=["each", "together"], default="each")
    parser.add_argument("--create", choices=["batch", "gather", "each"], default="batch")
    args = parser.parse_args()
    concurrent = args.mode == "concurrent"
    total = args.workflows * args.steps
    with tempfile.TemporaryDirectory() as tmp:
        seconds = await durable(args.workflows, args.steps, concurrent, os.path.join(tmp, "b.db"),
                                together=args.wait == "together", create=args.create)
    base = await baseline(args.workflows, args.steps, concurrent)
    print(json.dumps({
        "bench": "throughput", "mode": args.mode, "wait": args.wait, "create": args.create,
        "workflows": args.workflows,
        "steps": args.steps, "seconds": round(seconds, 3),
        "steps_per_second": round(total / seconds),
        "baseline_steps_per_second": round(total / base),
        "overhead_per_step_us": round((seconds - base) / total * 1e6, 1),
        "ratio_to_baseline": round(seconds / base, 1), "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }))


if __name__ == "__main__":
    asyncio.run(main())
