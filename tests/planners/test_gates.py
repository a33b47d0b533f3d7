"""Approval gates at run time: a gated tool runs only after a person's approval in the run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import agentflow as af
from planners import (
    Agent,
    ApprovalRequiredError,
    LLMPlanner,
    PlanDraft,
    PlanRequest,
    Provenance,
    ScriptedChatModel,
    to_tools,
    validate_plan,
)
from tests.planners.conftest import Calls, approver, bounded, fenced, until_status

GATED = """\
async def run(event, step):
    build = await step.do("build", lambda: tools.build(event.payload["version"]))
    decision = await step.wait_for_event("approve deploy", type="approval", timeout="1 hour")
    if not decision.payload.get("approved"):
        return {"status": "rejected", "by": decision.payload.get("by")}
    done = await step.do("deploy", lambda: tools.deploy(build["artifact"]))
    return {"status": done, "by": decision.payload.get("by")}
"""

# The static check looks for `tools.deploy(...)` calls; a helper variable hides the call.
SNEAKY = """\
async def run(event, step):
    def ship():
        go = tools.deploy
        return go("app.tar")
    return await step.do("deploy", ship, retries={"limit": 0})
"""


def release_tools(calls: Calls, out: Path) -> list[Any]:
    def build(version: str) -> dict:
        """Build a version."""
        calls.hit("build", version)
        return {"artifact": f"app-{version}.tar"}

    async def deploy(artifact: str) -> str:
        """Deploy an artifact to production."""
        calls.hit("deploy", artifact)
        (out / "deployed.txt").write_text(artifact)
        return "deployed"

    return [build, deploy]


def gated_agent(engine: af.Engine, replies: list[str], calls: Calls, out: Path,
                mode: str = "in-process", **options: Any) -> Agent:
    return Agent(engine, LLMPlanner(ScriptedChatModel(replies)), release_tools(calls, out),
                 tenant_id="ops", needs_approval=["deploy"], sandbox=mode,  # type: ignore[arg-type]
                 **options)


@pytest.mark.parametrize("mode", ["in-process", "process"])
async def test_instance_waits_until_approved(real_engine: af.Engine, calls: Calls,
                                             tmp_path: Path, mode: str) -> None:
    async with gated_agent(real_engine, [fenced(GATED)], calls, tmp_path, mode) as agent:
        instance = await agent.start("release 2.0", params={"version": "2.0"}, id="rel")
        details = await until_status(instance, "waiting")
        assert details.params == {"goal": "release 2.0", "version": "2.0"}
        assert calls.count("build") == 1 and calls.count("deploy") == 0
        assert not (tmp_path / "deployed.txt").exists()
        steps = await instance.steps()
        assert [(s.name, s.kind, s.state) for s in steps] == [
            ("build", "do", "completed"), ("approve deploy", "wait", "waiting")]

        await instance.send_event("approval", {"approved": True, "by": "ada"})
        details = await until_status(instance, "complete", "errored")
        assert details.status == "complete", details.error
        assert details.output == {"status": "deployed", "by": "ada"}
        assert calls.args("deploy") == [("app-2.0.tar",)]
        assert (tmp_path / "deployed.txt").read_text() == "app-2.0.tar"
        assert calls.count("build") == 1  # the replay after the wait took the journal


async def test_run_follows_the_gate(real_engine: af.Engine, calls: Calls,
                                    tmp_path: Path) -> None:
    seen: list[af.InstanceEvent] = []
    async with gated_agent(real_engine, [fenced(GATED)], calls, tmp_path) as agent:
        result = await bounded(agent.run("release 2.1", params={"version": "2.1"},
                                         on_event=approver(agent, seen=seen)))
    assert result.ok
    assert result.output == {"status": "deployed", "by": "ada"}
    types = [e.type for e in seen]
    assert types.index("instance.waiting") < types.index("event.received") < (
        types.index("instance.completed"))
    assert calls.count("deploy") == 1


async def test_rejection_returns_the_plans_answer(real_engine: af.Engine, calls: Calls,
                                                  tmp_path: Path) -> None:
    async with gated_agent(real_engine, [fenced(GATED)], calls, tmp_path) as agent:
        result = await bounded(agent.run(
            "release 2.2", params={"version": "2.2"},
            on_event=approver(agent, {"approved": False, "by": "bob"})))
    assert result.ok
    assert result.output == {"status": "rejected", "by": "bob"}
    assert calls.count("build") == 1
    assert calls.count("deploy") == 0
    assert not (tmp_path / "deployed.txt").exists()


async def test_approval_sent_before_the_wait_is_buffered(real_engine: af.Engine,
                                                         calls: Calls, tmp_path: Path) -> None:
    async with gated_agent(real_engine, [fenced(GATED)], calls, tmp_path) as agent:
        instance = await agent.start("release 2.3", params={"version": "2.3"})
        await instance.send_event("approval", {"approved": True, "by": "early"})
        details = await until_status(instance, "complete", "errored")
    assert details.status == "complete", details.error
    assert details.output == {"status": "deployed", "by": "early"}


@pytest.mark.parametrize("mode", ["in-process", "process"])
async def test_gated_tool_refuses_without_approval(real_engine: af.Engine, calls: Calls,
                                                   tmp_path: Path, mode: str) -> None:
    # the static check misses the hidden call, so the plan is accepted ...
    assert validate_plan(SNEAKY, to_tools(release_tools(calls, tmp_path),
                                          needs_approval=["deploy"])).ok
    drafts: list[PlanDraft] = []
    async with gated_agent(real_engine, [fenced(SNEAKY)], calls, tmp_path, mode,
                           max_revisions=0) as agent:
        result = await bounded(agent.run("ship it", on_plan=drafts.append))
    # ... and the run-time guard stops it
    assert drafts[0].ok and drafts[0].rounds == 1
    assert result.status == "errored"
    assert result.error is not None
    assert result.error.name == "ApprovalRequiredError"
    assert "needs a person's approval" in result.error.message
    assert calls.count("deploy") == 0
    assert not (tmp_path / "deployed.txt").exists()


class HandWritten:
    """A planner of our own that skips validation altogether."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.requests: list[PlanRequest] = []

    async def plan(self, request: PlanRequest) -> PlanDraft:
        self.requests.append(request)
        provenance = Provenance(model="by-hand", prompt_sha256="0" * 64, rounds=1,
                                verdict="valid", planner="HandWritten")
        return PlanDraft(self.source, provenance)


async def test_unvalidated_plan_from_a_custom_planner_cannot_bypass_the_gate(
        real_engine: af.Engine, calls: Calls, tmp_path: Path) -> None:
    source = """\
async def run(event, step):
    return await step.do("deploy", lambda: tools.deploy("x.tar"), retries={"limit": 0})
"""
    planner = HandWritten(source)
    async with Agent(real_engine, planner, release_tools(calls, tmp_path), tenant_id="ops",
                     needs_approval=["deploy"], sandbox="in-process",
                     max_revisions=1) as agent:
        result = await bounded(agent.run("ship", id="hand"))
        record = await agent.plan_of("hand")
    assert result.status == "errored"
    assert [a.error.name for a in result.attempts if a.error] == [
        "ApprovalRequiredError", "ApprovalRequiredError"]
    assert calls.count("deploy") == 0
    assert record.provenance is not None and record.provenance.model == "by-hand"
    assert len(planner.requests) == 2 and planner.requests[1].revision is not None
    assert "ApprovalRequiredError" in planner.requests[1].revision.error


@pytest.mark.parametrize("mode", ["in-process", "process"])
async def test_one_approval_allows_one_call(real_engine: af.Engine, calls: Calls,
                                            tmp_path: Path, mode: str) -> None:
    twice = """\
async def run(event, step):
    decision = await step.wait_for_event("approve", type="approval", timeout="1 hour")
    if not decision.payload.get("approved"):
        return "rejected"
    first = await step.do("deploy eu", lambda: tools.deploy("eu.tar"))
    second = await step.do("deploy us", lambda: tools.deploy("us.tar"), retries={"limit": 0})
    return [first, second]
"""
    async with gated_agent(real_engine, [fenced(twice)], calls, tmp_path,
                           max_revisions=0, mode=mode) as agent:
        result = await bounded(agent.run("ship twice", on_event=approver(agent)))
    assert result.status == "errored"
    assert result.error is not None and result.error.name == "ApprovalRequiredError"
    assert calls.args("deploy") == [("eu.tar",)]


async def test_two_approvals_allow_two_calls(real_engine: af.Engine, calls: Calls,
                                             tmp_path: Path) -> None:
    twice = """\
async def run(event, step):
    done = []
    for region in ["eu", "us"]:
        decision = await step.wait_for_event("approve " + region, type="approval",
                                             timeout="1 hour")
        if decision.payload.get("approved"):
            done.append(await step.do("deploy " + region,
                                      lambda: tools.deploy(region + ".tar")))
    return done
"""
    async with gated_agent(real_engine, [fenced(twice)], calls, tmp_path) as agent:
        result = await bounded(agent.run("ship twice", on_event=approver(agent)))
    assert result.ok, result.error
    assert result.output == ["deployed", "deployed"]
    assert calls.args("deploy") == [("eu.tar",), ("us.tar",)]


async def test_only_approved_true_counts(real_engine: af.Engine, calls: Calls,
                                         tmp_path: Path) -> None:
    """A truthy answer that is not ``approved: true`` passes the plan's own check but not
    the guard."""
    lax = GATED.replace("tools.deploy(build[\"artifact\"])",
                        "tools.deploy(build[\"artifact\"]), retries={\"limit\": 0}")
    async with gated_agent(real_engine, [fenced(lax)], calls, tmp_path,
                           max_revisions=0) as agent:
        result = await bounded(agent.run(
            "release", params={"version": "3"},
            on_event=approver(agent, {"approved": "yes", "by": "eve"})))
    assert result.status == "errored"
    assert result.error is not None and result.error.name == "ApprovalRequiredError"
    assert calls.count("deploy") == 0


def test_approval_required_error_is_not_retryable() -> None:
    assert issubclass(ApprovalRequiredError, af.NonRetryableError)
    assert issubclass(ApprovalRequiredError, af.AgentflowError)


@pytest.mark.parametrize("mode", ["in-process", "process"])
async def test_approved_gated_step_may_retry(real_engine: af.Engine, tmp_path: Path,
                                             mode: str) -> None:
    attempts: list[str] = []

    def deploy(target: str) -> str:
        """Deploy; the first attempt hits a network blip."""
        attempts.append(target)
        if len(attempts) == 1:
            raise ConnectionError("blip")
        return "deployed"

    plan = """\
async def run(event, step):
    decision = await step.wait_for_event("approve", type="approval", timeout="1 hour")
    if not decision.payload.get("approved"):
        return "rejected"
    return await step.do("deploy", lambda: tools.deploy("prod"),
                         retries={"limit": 2, "delay": 0, "backoff": "constant"})
"""
    async with Agent(real_engine, LLMPlanner(ScriptedChatModel([fenced(plan)])), [deploy],
                     needs_approval=["deploy"], sandbox=mode,
                     max_revisions=0) as agent:
        result = await bounded(agent.run("deploy", on_event=approver(agent)))
    assert result.error is None
    assert result.output == "deployed"
    assert attempts == ["prod", "prod"]


# -- retries, repeats and timeouts -------------------------------------------------------------
async def first_failed_attempt(instance: Any) -> af.InstanceEvent:
    async for event in instance.events():
        if event.type == "attempt.failed":
            return event
    raise AssertionError("the instance ended without a failed attempt")


@pytest.mark.parametrize("mode", ["in-process", "process"])
async def test_refused_gated_call_is_not_retried(real_engine: af.Engine, calls: Calls,
                                                 tmp_path: Path, mode: str) -> None:
    default_retries = SNEAKY.replace(', retries={"limit": 0}', "")
    async with gated_agent(real_engine, [fenced(default_retries)], calls, tmp_path,
                           max_revisions=0, mode=mode) as agent:
        instance = await agent.start("ship it")
        failed = await bounded(first_failed_attempt(instance), 10)
    assert failed.data["error"]["name"] == "ApprovalRequiredError"
    assert failed.data["retry_in"] is None


@pytest.mark.parametrize("mode", ["in-process", "process"])
async def test_tool_non_retryable_error_stops_retries(real_engine: af.Engine, mode: str) -> None:
    def check(version: str) -> str:
        """Check a version."""
        raise af.NonRetryableError(f"version {version} is yanked")

    plan = """\
async def run(event, step):
    return await step.do("check", lambda: tools.check(event.payload["version"]))
"""
    async with Agent(real_engine, LLMPlanner(ScriptedChatModel([fenced(plan)])), [check],
                     sandbox=mode, max_revisions=0) as agent:
        instance = await agent.start("check", params={"version": "1.0"})
        failed = await bounded(first_failed_attempt(instance), 10)
    assert failed.data["retry_in"] is None


@pytest.mark.parametrize("mode", ["in-process", "process"])
async def test_repeating_an_approved_call_in_another_step_needs_approval(
        real_engine: af.Engine, calls: Calls, tmp_path: Path, mode: str) -> None:
    again = """\
async def run(event, step):
    decision = await step.wait_for_event("approve", type="approval", timeout="1 hour")
    if not decision.payload.get("approved"):
        return "rejected"
    first = await step.do("deploy", lambda: tools.deploy("prod.tar"))
    second = await step.do("deploy again", lambda: tools.deploy("prod.tar"),
                           retries={"limit": 0})
    return [first, second]
"""
    async with gated_agent(real_engine, [fenced(again)], calls, tmp_path,
                           max_revisions=0, mode=mode) as agent:
        result = await bounded(agent.run("ship twice", on_event=approver(agent)))
    assert calls.count("deploy") == 1
    assert result.error is not None and result.error.name == "ApprovalRequiredError"


@pytest.mark.parametrize("mode", ["in-process", "process"])
async def test_plan_can_catch_a_wait_timeout(real_engine: af.Engine, mode: str) -> None:
    plan = """\
async def run(event, step):
    try:
        await step.wait_for_event("approve", type="approval", timeout=0.2)
    except WorkflowTimeoutError:
        return "nobody answered"
    return "answered"
"""
    async with Agent(real_engine, LLMPlanner(ScriptedChatModel([fenced(plan)])), [],
                     sandbox=mode, max_revisions=0) as agent:
        result = await bounded(agent.run("wait a little"), 10)
    assert result.error is None
    assert result.output == "nobody answered"
