"""Record the planner cassettes against the loopback OpenAI-compatible server.

    .venv/bin/python -m tests.planners.record_cassettes

rewrites ``tests/planners/cassettes/*.yaml``. The scenarios (scripted replies, tools, the
calls that drive the planner and the agent) live here and ``test_cassettes.py`` replays them
with ``record_mode="none"``, so recording and replaying run the same code.

Cassettes match requests on method, path and the JSON body's ``model`` only, so a change of
prompt wording does not break replay; requests that match alike get the recorded responses
in recorded order (vcrpy plays each interaction at most once, the first unplayed match
first, with ``allow_playback_repeats=False``).
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import vcr

import agentflow as af
from planners import (
    Agent,
    AgentResult,
    LLMPlanner,
    OpenAIChatModel,
    PlanDraft,
    PlanRequest,
    to_tools,
)

from .openai_server import OpenAICompatibleServer

CASSETTES = Path(__file__).parent / "cassettes"
MODEL = "gpt-4.1-mini"
API_KEY = "test"

# -- scripted replies ---------------------------------------------------------------------
PLAN_VALID = '''Here is the plan.

```python
async def run(event, step):
    checkout = await step.do("check out", lambda: tools.checkout(event.payload["version"]))
    tests = await step.do("run tests", lambda: tools.run_tests(checkout["path"], "-x"))
    return {"path": checkout["path"], "tests": tests}
```'''

PLAN_IMPORT_OS = '''```python
import os

async def run(event, step):
    checkout = await step.do("check out", lambda: tools.checkout(os.environ["VERSION"]))
    return {"path": checkout["path"]}
```'''

PLAN_TOOL_OUTSIDE_STEP = '''```python
async def run(event, step):
    checkout = tools.checkout(event.payload["version"])
    tests = await step.do("run tests", lambda: tools.run_tests(checkout["path"], "-x"))
    return {"path": checkout["path"], "tests": tests}
```'''

# The agent's first plan passes a flag run_tests refuses, with no retries on that step: the
# run fails; the revision fixes the flag and keeps "check out" unchanged, so it is reused.
PLAN_WRONG_FLAG = '''```python
async def run(event, step):
    checkout = await step.do("check out", lambda: tools.checkout(event.payload["version"]))
    tests = await step.do("run tests", lambda: tools.run_tests(checkout["path"], "--fast"),
                          retries={"limit": 0})
    return {"path": checkout["path"], "tests": tests}
```'''

PLAN_FIXED_FLAG = PLAN_WRONG_FLAG.replace('"--fast"', '"-x"')

GOAL = "check out version 1.0 and run its tests"
PARAMS = {"version": "1.0"}

SCRIPTS: dict[str, list[str]] = {
    "plan_valid_first": [PLAN_VALID],
    "plan_two_repairs": [PLAN_IMPORT_OS, PLAN_TOOL_OUTSIDE_STEP, PLAN_VALID],
    "agent_replan": [PLAN_WRONG_FLAG, PLAN_FIXED_FLAG],
}


# -- tools --------------------------------------------------------------------------------
@dataclass
class Toolbox:
    """The tools the plans get, counting their calls."""

    calls: list[tuple[Any, ...]] = field(default_factory=list)

    def tools(self) -> list[Any]:
        calls = self.calls

        def checkout(version: str) -> dict:
            """Check out the sources of a version; returns {"path": ...}."""
            calls.append(("checkout", version))
            return {"path": f"/work/{version}"}

        def run_tests(path: str, flags: str = "") -> dict:
            """Run the test suite in a checkout. The only supported flag is "-x"."""
            calls.append(("run_tests", path, flags))
            if flags not in ("", "-x"):
                raise ValueError(f"unknown test runner flag {flags!r}: use '-x'")
            return {"passed": 12, "failed": 0}

        return [checkout, run_tests]

    def count(self, tool: str) -> int:
        return sum(1 for call in self.calls if call[0] == tool)


# -- vcr ----------------------------------------------------------------------------------
def _model_of(request: Any) -> Any:
    body = request.body
    if not body:
        return None
    try:
        return json.loads(body).get("model")
    except (ValueError, AttributeError):
        return None


def model_matcher(r1: Any, r2: Any) -> None:
    """Requests match when their JSON bodies name the same model (the prompt is ignored)."""
    if _model_of(r1) != _model_of(r2):
        raise AssertionError(f"model {_model_of(r1)!r} != {_model_of(r2)!r}")


def make_vcr() -> vcr.VCR:
    recorder = vcr.VCR(
        cassette_library_dir=str(CASSETTES),
        filter_headers=["authorization"],
        decode_compressed_response=True,
        match_on=["method", "path", "model"],
    )
    recorder.register_matcher("model", model_matcher)
    return recorder


def use_cassette(name: str, record_mode: str) -> Any:
    """The cassette ``cassettes/<name>.yaml``; each recorded exchange plays at most once."""
    return make_vcr().use_cassette(f"{name}.yaml", record_mode=record_mode,
                                   allow_playback_repeats=False)


# -- scenarios ----------------------------------------------------------------------------
def chat_model(base_url: str) -> OpenAIChatModel:
    """The OpenAI chat model the scenarios use (an ``openai.AsyncOpenAI`` underneath)."""
    return OpenAIChatModel(MODEL, base_url=base_url, api_key=API_KEY)


async def plan_once(base_url: str, toolbox: Toolbox | None = None) -> PlanDraft:
    """One planning call (with its repairs) of LLMPlanner over HTTP."""
    toolbox = toolbox or Toolbox()
    planner = LLMPlanner(chat_model(base_url))
    request = PlanRequest(GOAL, to_tools(toolbox.tools()), PARAMS)
    return await planner.plan(request)


async def agent_replan(base_url: str, db_url: str,
                       toolbox: Toolbox | None = None) -> AgentResult:
    """An agent run whose first plan fails at run time and whose revision succeeds."""
    toolbox = toolbox or Toolbox()
    async with (
        af.Engine.open(db_url, poll_interval=0.05) as engine,
        Agent(engine, LLMPlanner(chat_model(base_url)), toolbox.tools(), tenant_id="acme",
              sandbox="in-process") as agent,
    ):
        return await agent.run(GOAL, params=PARAMS, id="replan")


# -- recording ----------------------------------------------------------------------------
def _record(name: str, run: Any) -> None:
    path = CASSETTES / f"{name}.yaml"
    path.unlink(missing_ok=True)
    with OpenAICompatibleServer(SCRIPTS[name]) as server:
        with use_cassette(name, "all") as cassette:
            outcome = asyncio.run(run(server.base_url))
        if server.remaining:
            raise SystemExit(f"{name}: {server.remaining} scripted replies were not used")
    print(f"{path}: {len(cassette)} exchanges; {outcome}")


def main() -> None:
    CASSETTES.mkdir(exist_ok=True)

    async def valid_first(base_url: str) -> str:
        draft = await plan_once(base_url)
        assert draft.ok and draft.rounds == 1, draft.failure
        return f"rounds={draft.rounds}"

    async def two_repairs(base_url: str) -> str:
        draft = await plan_once(base_url)
        assert draft.ok and draft.rounds == 3, draft.failure
        return f"rounds={draft.rounds}"

    async def replan(base_url: str) -> str:
        toolbox = Toolbox()
        with tempfile.TemporaryDirectory() as tmp:
            result = await agent_replan(base_url, f"sqlite:///{Path(tmp) / 'a.db'}", toolbox)
        assert result.ok and result.revisions == 1 and result.reused_steps >= 1, result
        return (f"status={result.status.value} revisions={result.revisions} "
                f"reused={result.reused_steps} calls={toolbox.calls}")

    _record("plan_valid_first", valid_first)
    _record("plan_two_repairs", two_repairs)
    _record("agent_replan", replan)


if __name__ == "__main__":
    main()
