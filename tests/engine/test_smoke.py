from __future__ import annotations

import agentflow as af
from tests.conftest import drive


async def test_a_workflow_runs_to_completion(engine: af.Engine, clock: af.FakeClock) -> None:
    async def run(event: af.Event, step: af.Step) -> dict[str, object]:
        a = await step.do("a", lambda: event.payload["x"] + 1)
        await step.sleep("nap", "2 hours")
        return {"a": a}

    binding = engine.register("smoke", run)
    instance = await binding.create(params={"x": 1})
    details = await drive(engine, clock, instance)
    assert details.status == "complete"
    assert details.output == {"a": 2}
