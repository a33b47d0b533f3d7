"""The workflow the scaling benchmark's worker processes run: W steps, each a no-op."""

from __future__ import annotations

import agentflow as af


async def ten_steps(event: af.Event, step: af.Step) -> int:
    total = 0
    for i in range(10):
        total += await step.do(f"s{i}", lambda i=i: i)
    return total


APP = {"w10": ten_steps}
