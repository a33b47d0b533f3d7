"""LLMPlanner: the prompt it writes, the repair loop, extraction of the plan from the answer,
provenance, and the planner-level approval rule."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import pytest

import agentflow as af
from planners import (
    Agent,
    Completion,
    LLMPlanner,
    Message,
    ModelError,
    PlanningFailed,
    PlanRequest,
    Revision,
    ScriptedChatModel,
    Usage,
    check_gates,
    extract_source,
    system_prompt,
    to_tools,
    validate_plan,
)
from tests.planners.conftest import fenced


def checkout(version: str) -> dict:
    """Check out the sources of a version."""
    return {"path": f"/work/{version}"}


def run_tests(path: str, flags: str = "") -> dict:
    """Run the test suite in a checkout."""
    return {"ok": True}


async def deploy(path: str, region: str | None = None) -> str:
    """Deploy a checkout to production."""
    return "deployed"


def tools() -> dict:
    return to_tools([checkout, run_tests, deploy], needs_approval=["deploy"])


GOOD = """\
async def run(event, step):
    co = await step.do("check out", lambda: tools.checkout(event.payload["version"]))
    await step.do("run tests", lambda: tools.run_tests(co["path"], "-x"))
    decision = await step.wait_for_event("approve deploy", type="approval", timeout="1 hour")
    if not decision.payload.get("approved"):
        return {"status": "rejected", "by": decision.payload.get("by")}
    return await step.do("deploy", lambda: tools.deploy(co["path"]))
"""

IMPORTS_OS = """\
import os

async def run(event, step):
    co = await step.do("check out", lambda: tools.checkout(os.getcwd()))
    return co
"""

TOOL_OUTSIDE = """\
async def run(event, step):
    version = event.payload["version"]
    co = tools.checkout(version)
    return co
"""

NO_APPROVAL = """\
async def run(event, step):
    co = await step.do("check out", lambda: tools.checkout(event.payload["version"]))
    return await step.do("deploy", lambda: tools.deploy(co["path"]))
"""


def words(messages: Sequence[Message]) -> int:
    return sum(len(m.content.split()) for m in messages)


def request(goal: str = "release 1.4.0", **context: object) -> PlanRequest:
    return PlanRequest(goal, tools(), {"goal": goal, "version": "1.4.0", **context})


# -- the repair loop ------------------------------------------------------------------------
async def test_valid_first_time() -> None:
    reply = fenced(GOOD)
    model = ScriptedChatModel([reply], name="scripted-a")
    draft = await LLMPlanner(model).plan(request())

    assert draft.ok and draft.failure is None
    assert draft.source == GOOD
    assert (draft.rounds, draft.repairs) == (1, 0)
    assert len(draft.attempts) == 1 and draft.attempts[0].ok
    assert draft.report is not None and draft.report.ok
    prov = draft.provenance
    assert prov.verdict == "valid"
    assert prov.model == "scripted-a"
    assert prov.rounds == 1
    assert prov.revision_of is None
    assert prov.planner == "LLMPlanner"
    assert prov.usage == Usage(words(model.calls[0]), len(reply.split()))
    assert draft.sha256 == hashlib.sha256(GOOD.encode()).hexdigest()
    # the conversation: the system prompt, then the goal with the payload
    assert [m.role for m in model.calls[0]] == ["system", "user"]
    assert "Goal: release 1.4.0" in model.calls[0][1].content
    assert '"version": "1.4.0"' in model.calls[0][1].content


async def test_two_repair_rounds_send_the_diagnostics_back() -> None:
    replies = [fenced(IMPORTS_OS), fenced(TOOL_OUTSIDE), fenced(GOOD)]
    model = ScriptedChatModel(replies)
    draft = await LLMPlanner(model, max_rounds=4).plan(request())

    assert draft.ok
    assert (draft.rounds, draft.repairs) == (3, 2)
    assert len(model.calls) == 3
    assert "import-not-allowed" in draft.attempts[0].report.codes
    assert "tool-outside-step" in draft.attempts[1].report.codes
    assert draft.attempts[2].report.ok
    assert draft.source == GOOD

    # round 2: the first answer and the validator's findings on it (with line numbers)
    second = model.calls[1]
    assert [m.role for m in second] == ["system", "user", "assistant", "user"]
    assert second[2].content == replies[0]
    assert "[import-not-allowed]" in second[3].content
    assert "line 1:" in second[3].content
    assert "Fix every problem" in second[3].content
    # round 3: the whole history, the newest findings last
    third = model.calls[2]
    assert [m.role for m in third] == ["system", "user", "assistant", "user", "assistant",
                                       "user"]
    assert third[4].content == replies[1]
    assert "[tool-outside-step]" in third[5].content
    assert "line 3:" in third[5].content
    assert "[import-not-allowed]" not in third[5].content

    # usage sums every round
    expected = Usage(0, 0)
    for call, reply in zip(model.calls, replies, strict=True):
        expected = expected + Usage(words(call), len(reply.split()))
    assert draft.provenance.usage == expected
    assert draft.provenance.usage.total_tokens == expected.input_tokens + expected.output_tokens
    assert draft.provenance.rounds == 3


async def test_plan_that_never_validates() -> None:
    model = ScriptedChatModel([fenced(IMPORTS_OS), fenced(TOOL_OUTSIDE), fenced(GOOD)])
    draft = await LLMPlanner(model, max_rounds=2).plan(request())

    assert not draft.ok
    assert len(model.calls) == 2 and model.remaining == 1  # stopped at max_rounds
    assert draft.rounds == 2 and len(draft.attempts) == 2
    assert draft.provenance.verdict == "rejected"
    assert draft.failure is not None
    assert "2 rounds" in draft.failure
    assert "[tool-outside-step]" in draft.failure
    assert "line 3" in draft.failure
    assert "problem" in draft.failure
    assert any("tool-outside-step" in d for d in draft.provenance.diagnostics)


async def test_one_round_failure_says_one_round() -> None:
    draft = await LLMPlanner(ScriptedChatModel([fenced(IMPORTS_OS)]), max_rounds=1).plan(
        request())
    assert not draft.ok
    assert "in 1 round;" in (draft.failure or "")
    assert "import-not-allowed" in (draft.failure or "")


async def test_agent_run_raises_planning_failed(real_engine: af.Engine) -> None:
    model = ScriptedChatModel([fenced(IMPORTS_OS), fenced(IMPORTS_OS)])
    async with Agent(real_engine, LLMPlanner(model, max_rounds=2), [checkout],
                     sandbox="in-process") as agent:
        with pytest.raises(PlanningFailed) as raised:
            await agent.run("check out 1.0", params={"version": "1.0"}, id="never")
    failed = raised.value
    assert isinstance(failed, af.AgentflowError)
    assert not failed.draft.ok
    assert failed.draft.rounds == 2
    assert "import-not-allowed" in str(failed)
    assert len(model.calls) == 2
    # nothing was started
    with pytest.raises(af.InstanceNotFoundError):
        await agent._binding.get("never")


async def test_model_error_propagates() -> None:
    model = ScriptedChatModel([fenced(IMPORTS_OS)])
    with pytest.raises(ModelError, match="only 1 replies"):
        await LLMPlanner(model, max_rounds=3).plan(request())


# -- extracting the plan from the answer ----------------------------------------------------
def test_extract_source_from_python_block() -> None:
    assert extract_source(fenced(GOOD)) == GOOD
    assert extract_source(fenced(GOOD, lang="py")) == GOOD
    assert extract_source(fenced(GOOD, lang="")) == GOOD


def test_extract_source_prefers_the_block_defining_run() -> None:
    text = ("First a helper you might like:\n```python\nprint('hi')\n```\n"
            "and the plan:\n```python\n" + GOOD + "```\n")
    assert extract_source(text) == GOOD


def test_extract_source_falls_back_to_first_block_then_whole_text() -> None:
    assert extract_source("```python\nx = 1\n```\n```python\ny = 2\n```") == "x = 1\n"
    assert extract_source("\n\n" + GOOD + "\n\n") == GOOD


async def test_planner_accepts_bare_code_answer() -> None:
    model = ScriptedChatModel([GOOD])
    draft = await LLMPlanner(model).plan(request())
    assert draft.ok and draft.source == GOOD


async def test_scripted_reply_may_be_a_function_of_the_conversation() -> None:
    def reply(messages: Sequence[Message]) -> str:
        assert "Goal: release 9" in messages[-1].content
        return fenced(GOOD)

    draft = await LLMPlanner(ScriptedChatModel([reply])).plan(request("release 9"))
    assert draft.ok


# -- the prompt ------------------------------------------------------------------------------
def test_system_prompt_lists_tools_and_step_api() -> None:
    text = system_prompt(tools())
    assert "tools.checkout(version: str) -> dict[str, Any]" in text
    assert "Check out the sources of a version." in text
    assert "tools.run_tests(path: str, flags: str = ...) -> dict[str, Any]" in text
    assert "Run the test suite in a checkout." in text
    assert "tools.deploy(path: str, region: str | None = ...) -> str [needs approval]" in text
    assert "Deploy a checkout to production." in text
    # only the gated tool is marked
    gated = [line for line in text.splitlines()
             if line.startswith("- tools.") and line.endswith("[needs approval]")]
    assert gated == ["- tools.deploy(path: str, region: str | None = ...) -> str "
                     "[needs approval]"]
    # the arguments schema
    assert '"required": ["path"]' in text
    for method in ("do", "sleep", "sleep_until", "wait_for_event", "wait_for_approval", "all"):
        assert f"await step.{method}(" in text
    assert "step.wait_for_approval(" in text and "decision.approved" in text
    for module in ("json", "math", "re", "datetime"):
        assert module in text


def test_system_prompt_without_tools() -> None:
    assert "no tools are granted" in system_prompt({})


async def test_instructions_are_appended_to_the_system_prompt() -> None:
    model = ScriptedChatModel([GOOD])
    await LLMPlanner(model, instructions="Always name steps in French.").plan(request())
    assert model.calls[0][0].content.endswith("More instructions:\nAlways name steps in French.")


async def test_prompt_sha256_is_stable_and_depends_on_the_goal() -> None:
    async def sha(goal: str, reply: str = GOOD) -> str:
        draft = await LLMPlanner(ScriptedChatModel([reply])).plan(request(goal))
        return draft.provenance.prompt_sha256

    first = await sha("release 1.4.0")
    assert first == await sha("release 1.4.0")
    # the hash covers the question, not the answer
    assert first == await sha("release 1.4.0", fenced(GOOD))
    assert first != await sha("release 1.5.0")
    assert len(first) == 64 and int(first, 16) >= 0


async def test_revision_request_shows_the_failed_plan_and_records_revision_of() -> None:
    journal = (
        af.StepInfo("check out", 1, "do", "completed", {"path": "/work/1.4.0"}),
        af.StepInfo("run tests", 1, "do", "errored",
                    error=af.ErrorInfo("RuntimeError", "unknown flag")),
    )
    revision = Revision(GOOD, "RuntimeError: unknown flag", journal)
    model = ScriptedChatModel([GOOD])
    req = PlanRequest("release 1.4.0", tools(), {"version": "1.4.0"}, revision)
    draft = await LLMPlanner(model).plan(req)

    user = model.calls[0][1].content
    assert GOOD in user
    assert "Error: RuntimeError: unknown flag" in user
    assert "- do 'check out' #1: completed -> {\"path\": \"/work/1.4.0\"}" in user
    assert "- do 'run tests' #1: errored (RuntimeError: unknown flag)" in user
    assert draft.provenance.revision_of == hashlib.sha256(GOOD.encode()).hexdigest()


# -- approval gates at planning time ---------------------------------------------------------
async def test_gated_call_without_approval_is_sent_back_and_repaired() -> None:
    model = ScriptedChatModel([fenced(NO_APPROVAL), fenced(GOOD)])
    draft = await LLMPlanner(model).plan(request())

    assert draft.ok and draft.rounds == 2
    first = draft.attempts[0].report
    assert first.codes == ("approval-missing",)
    assert first.errors[0].line == 3
    repair = model.calls[1][-1].content
    assert "- line 3: [approval-missing] tools.deploy needs a person's approval" in repair
    assert 'wait_for_approval("approve deploy"' in repair


def test_check_gates_rules() -> None:
    after = NO_APPROVAL.replace(
        '    return await step.do("deploy"',
        '    await step.do("deploy"') + (
        '    await step.wait_for_event("late", type="approval")\n')
    assert [d.code for d in check_gates(after, ["deploy"])] == ["approval-missing"]
    wrong_type = GOOD.replace('type="approval"', 'type="approve"')
    assert [d.line for d in check_gates(wrong_type, ["deploy"])] == [7]
    assert check_gates(GOOD, ["deploy"]) == []
    assert check_gates(NO_APPROVAL, []) == []
    assert check_gates(NO_APPROVAL, ["run_tests"]) == []
    assert check_gates("def broken(:\n", ["deploy"]) == []


def test_validate_plan_adds_the_gate_rule_to_the_sandbox_verdict() -> None:
    assert validate_plan(NO_APPROVAL, tools()).codes == ("approval-missing",)
    bad = "import os\n" + NO_APPROVAL
    assert "import-not-allowed" in validate_plan(bad, tools()).codes
    assert validate_plan(GOOD, tools()).ok
    ungated = to_tools([checkout, run_tests, deploy])
    assert validate_plan(NO_APPROVAL, ungated).ok


# -- arguments -------------------------------------------------------------------------------
@pytest.mark.parametrize("rounds", [0, -1, True, 1.5, "3"])
def test_bad_max_rounds(rounds: object) -> None:
    with pytest.raises(af.InvalidArgumentError, match="max_rounds"):
        LLMPlanner(ScriptedChatModel([]), max_rounds=rounds)  # type: ignore[arg-type]


@pytest.mark.parametrize("goal", ["", "   \n", None])
async def test_empty_goal(goal: object) -> None:
    model = ScriptedChatModel([GOOD])
    with pytest.raises(af.InvalidArgumentError, match="goal"):
        await LLMPlanner(model).plan(PlanRequest(goal, tools()))  # type: ignore[arg-type]
    assert model.calls == []


async def test_plan_needs_a_plan_request() -> None:
    with pytest.raises(af.InvalidArgumentError, match="PlanRequest"):
        await LLMPlanner(ScriptedChatModel([GOOD])).plan("release")  # type: ignore[arg-type]


async def test_any_object_with_name_and_complete_is_a_model() -> None:
    class Echo:
        name = "echo-1"

        def __init__(self) -> None:
            self.seen: list[list[Message]] = []

        async def complete(self, messages: Sequence[Message]) -> Completion:
            self.seen.append(list(messages))
            return Completion(fenced(GOOD), "echo-1-2025", None)

    model = Echo()
    planner = LLMPlanner(model)
    assert planner.model is model
    assert "echo-1" in repr(planner)
    draft = await planner.plan(request())
    assert draft.ok
    assert draft.provenance.model == "echo-1-2025"  # the completion's model wins
    assert draft.provenance.usage is None
    assert len(model.seen) == 1
