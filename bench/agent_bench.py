"""What the agent layer costs on top of what it uses, as ratios measured in one process.

1. planning without the model: ``LLMPlanner.plan`` with a scripted model answering at once
   (prompt generation, code extraction, validation, the approval check) against the sandbox's
   ``validate`` alone on the same plan;
2. a step through the agent (``AgentStep`` on a dispatched instance: the approval context, the
   occurrence counter) against the same plan through plain dispatch, in-process, on SQLite;
3. the inputs fingerprint of a step body, and the dry replay that finds a failed run's
   reusable steps, against replaying the same journal in the engine.

    python bench/agent_bench.py [--steps 200] [--plans 200]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _common import environment

import agentflow as af
import sandbox
from agentflow.dispatch import Loader, create_dynamic_workflow_entrypoint, wrap_workflow_binding
from planners import Agent, LLMPlanner, PlanRequest, ScriptedChatModel, extract_source, to_tools
from planners.demo.release_tools import GATED, ReleaseTools
from planners.demo.script import PLAN
from planners.reuse import finished_steps, refusing_tools


def loop_plan(steps: int) -> str:
    return (
        "async def run(event, step):\n"
        "    total = 0\n"
        f"    for i in range({steps}):\n"
        "        total += await step.do('add', lambda: tools.add(i))\n"
        "    return total\n"
    )


def add(i: int) -> int:
    """Return i."""
    return i


async def planning(plans: int) -> dict[str, Any]:
    tools = to_tools(ReleaseTools(Path("/nonexistent")).tools(), needs_approval=GATED)
    sources = [f"{extract_source(PLAN)}# {i}\n" for i in range(plans)]  # distinct texts
    start = time.perf_counter()
    for source in sources:
        assert sandbox.validate(source, tools=list(tools)).ok
    baseline = (time.perf_counter() - start) / plans
    planner = LLMPlanner(ScriptedChatModel([f"```python\n{s}```" for s in sources]))
    request = PlanRequest("release 1.4.0", tools, {"version": "1.4.0"})
    start = time.perf_counter()
    for _ in range(plans):
        draft = await planner.plan(request)
        assert draft.ok
    measured = (time.perf_counter() - start) / plans
    return {"plan_ms": round(measured * 1e3, 3), "validate_ms": round(baseline * 1e3, 3),
            "ratio": round(measured / baseline, 2)}


async def per_step(steps: int, directory: Path) -> dict[str, Any]:
    source = loop_plan(steps)
    async with af.Engine.open(f"sqlite:///{directory / 'steps.db'}") as engine:
        loader = Loader(engine, tools_for=lambda tenant: {"add": add}, mode="in-process")
        plain = engine.register("plain", create_dynamic_workflow_entrypoint(loader))
        await loader.registry.register("t", "plain", source, tools=["add"])
        binding = wrap_workflow_binding(plain, tenant_id="t")
        start = time.perf_counter()
        details = await (await binding.create(params={})).wait()
        baseline = (time.perf_counter() - start) / steps
        assert details.output == sum(range(steps)), details

        planner = LLMPlanner(ScriptedChatModel([source]))
        async with Agent(engine, planner, [add], tenant_id="t", sandbox="in-process") as agent:
            start = time.perf_counter()
            result = await agent.run("add them up")
            measured = (time.perf_counter() - start) / steps
            assert result.output == sum(range(steps)), result
    return {"agent_step_us": round(measured * 1e6, 1), "dispatch_step_us":
            round(baseline * 1e6, 1), "ratio": round(measured / baseline, 2),
            "note": "agent time includes planning once"}


async def reuse(steps: int, directory: Path) -> dict[str, Any]:
    source = loop_plan(steps)
    plan = sandbox.compile_plan(source, tools=["add"])
    body = None

    class Grab:
        async def do(self, name: str, fn: Any, **kw: Any) -> Any:
            nonlocal body
            body = fn
            raise StopAsyncIteration

    with contextlib.suppress(StopAsyncIteration):  # Grab stops the run at its first step
        await plan.runner(tools={"add": add})(af.Event({}, datetime.now(UTC), "x", "w"),
                                               Grab())
    assert body is not None
    n = 20000
    start = time.perf_counter()
    for _ in range(n):
        sandbox.inputs_fingerprint(body)
    fingerprint_us = (time.perf_counter() - start) / n * 1e6

    async with af.Engine.open(f"sqlite:///{directory / 'reuse.db'}") as engine:
        work = engine.register("w", plan.runner(tools={"add": add}))
        instance = await work.create(params={})
        await instance.wait()
        journal = await instance.steps()
        event = af.Event({}, datetime.now(UTC), instance.id, "w")
        dry_runner = plan.runner(tools=refusing_tools(["add"]))
        timings = []
        for _ in range(5):
            start = time.perf_counter()
            seeds = await finished_steps(dry_runner, event, journal)
            timings.append(time.perf_counter() - start)
        assert len(seeds) == steps
        dry = statistics.median(timings)
        baseline = []
        for _ in range(5):  # the engine replays the same finished instance from its journal
            await instance.restart()
            start = time.perf_counter()
            await instance.wait()
            baseline.append(time.perf_counter() - start)
    return {"fingerprint_us": round(fingerprint_us, 2),
            "dry_replay_ms": round(dry * 1e3, 2),
            "engine_rerun_ms": round(statistics.median(baseline) * 1e3, 2),
            "ratio": round(dry / statistics.median(baseline), 3),
            "note": "engine rerun = restart + run of the same plan; the dry replay runs no body"}


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--plans", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        result = {
            "planning": await planning(args.plans),
            "per_step": await per_step(args.steps, directory),
            "reuse": await reuse(args.steps, directory),
            "environment": environment(),
        }
    print(json.dumps(result))


if __name__ == "__main__":
    asyncio.run(main())
