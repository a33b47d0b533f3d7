"""Record the demo's cassette: the demo's replies, served by the loopback OpenAI-compatible
server that ships with the tests, and the planner's real HTTP exchanges with it.

    python -m planners.demo.record      # from a checkout (needs tests/ on the path)
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from planners import LLMPlanner, OpenAIChatModel, PlanRequest, to_tools

from .cassette import CASSETTE, MODEL, vcr_config
from .release_tools import GATED, ReleaseTools
from .script import GOAL, REPLIES


async def record(path: Path = CASSETTE) -> None:
    from tests.planners.openai_server import OpenAICompatibleServer

    path.unlink(missing_ok=True)
    tools = to_tools(ReleaseTools(Path("/nonexistent")).tools(), needs_approval=GATED)
    with OpenAICompatibleServer(REPLIES) as server, \
            vcr_config("all").use_cassette(str(path)):
        planner = LLMPlanner(OpenAIChatModel(MODEL, base_url=server.base_url, api_key="demo"))
        draft = await planner.plan(PlanRequest(GOAL.format(version="1.4.0"), tools,
                                               {"goal": GOAL, "version": "1.4.0"}))
    assert draft.ok and draft.rounds == len(REPLIES), draft.failure


if __name__ == "__main__":
    asyncio.run(record())
    print(f"recorded {CASSETTE}")
