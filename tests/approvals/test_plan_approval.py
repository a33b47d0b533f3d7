"""Agent(approve_plans=True): every plan waits at PLAN_GATE for a person to approve it as a
whole; a rejection's comment goes to the model with the revision request, and the revised plan
is shown with its diff. Approving a plan grants none of its gated tool calls."""

from __future__ import annotations

from typing import Any

import pytest

import agentflow as af
from planners import (
    PLAN_GATE,
    Agent,
    ApprovalRequiredError,
    LLMPlanner,
    PlanDraft,
    PlanNotApprovedError,
    PlanRequest,
    Provenance,
    ScriptedChatModel,
)
from tests.approvals.conftest import gate_named, open_gates
from tests.conftest import drive
from tests.dispatch._support import settle

FIRST = '''\
async def run(event, step):
    total = await step.do("add", lambda: tools.add(1, 2))
    decision = await step.wait_for_approval("approve deploy", prompt="Deploy?",
                                            data={"total": total})
    if not decision.approved:
        return {"total": total, "deployed": None}
    deployed = await step.do("deploy", lambda: tools.deploy(total))
    return {"total": total, "deployed": deployed}
'''
REVISED = FIRST.replace("tools.add(1, 2)", "tools.add(2, 3)")


def fenced(source: str) -> str:
    return f"Here it is.\n\n```python\n{source}```\n"


class Tools:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def functions(self) -> list[Any]:
        def add(a: int, b: int) -> int:
            """Add two numbers."""
            self.calls.append(("add", (a, b)))
            return a + b

        def deploy(total: int) -> str:
            """Deploy the total to production."""
            self.calls.append(("deploy", total))
            return f"deployed {total}"

        return [add, deploy]


def agent(engine: af.Engine, planner: Any, tools: Tools, mode: str, **options: Any) -> Agent:
    return Agent(engine, planner, tools.functions(), tenant_id="ops",
                 needs_approval=["deploy"], approve_plans=True,
                 sandbox=mode, **options)  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", ["in-process", "process"])
async def test_the_plan_waits_for_approval_before_its_first_step(
    engine: af.Engine, mode: str,
) -> None:
    tools = Tools()
    async with agent(engine, LLMPlanner(ScriptedChatModel([fenced(FIRST)])), tools,
                     mode) as ops:
        instance = await ops.start("add and deploy", id="p1")
        [request] = await open_gates(instance)
        assert tools.calls == []  # nothing ran before the plan was approved
        record = await ops.plan_of(instance)
        assert request.gate == PLAN_GATE
        assert request.prompt == "Run the plan for: add and deploy"
        data = request.data
        assert data["source"] == record.source == FIRST
        assert data["sha256"] == record.code.sha256 == request.version
        assert data["diff"] is None
        summary = data["summary"]
        assert [(s["kind"], s["name"], s["tools"], s["gated"]) for s in summary["steps"]] == [
            ("step", "add", ["add"], False),
            ("approval", "approve deploy", [], False),
            ("step", "deploy", ["deploy"], True),
        ]
        assert summary["tools"] == ["add", "deploy"]
        assert summary["gates"] == ["approve deploy"]
        assert summary["parallel"] is False
        assert "approve deploy" in data["summary_text"]
        assert "[needs approval]" in data["summary_text"]

        await instance.approve(PLAN_GATE, by="lead", version=request.version)
        # the plan runs up to its own gate: approving the plan did not approve the deploy
        own = await gate_named(instance, "approve deploy")
        assert own.gate == "approve deploy" and own.data == {"total": 3}
        assert tools.calls == [("add", (1, 2))]
        await instance.approve("approve deploy", by="lead")
        details = await settle(instance, timeout=15)
    assert details.status == "complete", details.error
    assert details.output == {"total": 3, "deployed": "deployed 3"}


@pytest.mark.parametrize("mode", ["in-process", "process"])
async def test_a_rejected_plan_is_revised_with_the_comment_and_shown_with_a_diff(
    engine: af.Engine, mode: str,
) -> None:
    tools = Tools()
    model = ScriptedChatModel([fenced(FIRST), fenced(REVISED)])
    seen: list[af.ApprovalRequest] = []
    async with agent(engine, LLMPlanner(model), tools, mode, max_revisions=1) as ops:

        async def on_event(event: af.InstanceEvent) -> None:
            if event.type != "approval.requested":
                return
            instance = await ops.get(event.instance_id)
            [request] = await instance.approvals()
            seen.append(request)
            if request.gate != PLAN_GATE:
                await instance.approve(request.gate, by="lead")
            elif len(seen) == 1:
                await instance.reject(PLAN_GATE, by="lead", comment="add 2 and 3 instead",
                                      version=request.version)
            else:
                await instance.approve(PLAN_GATE, by="lead", version=request.version)

        result = await ops.run("add and deploy", id="p2", on_event=on_event)

    assert result.ok, result.error
    assert result.output == {"total": 5, "deployed": "deployed 5"}
    assert result.revisions == 1
    first = result.attempts[0]
    assert first.status == "errored" and first.error is not None
    assert first.error.name == "PlanNotApprovedError"
    assert "rejected by lead: add 2 and 3 instead" in first.error.message
    assert ("add", (1, 2)) not in tools.calls  # the rejected plan never ran a step

    revision_request = "\n".join(m.content for m in model.calls[1])
    assert "add 2 and 3 instead" in revision_request

    plan_gates = [r for r in seen if r.gate == PLAN_GATE]
    assert len(plan_gates) == 2
    assert plan_gates[0].data["diff"] is None
    revised = plan_gates[1]
    assert revised.prompt == "Run a revised plan for: add and deploy"
    assert revised.data["source"] == REVISED
    assert "-    total = await step.do(\"add\", lambda: tools.add(1, 2))" in revised.data["diff"]
    assert "+    total = await step.do(\"add\", lambda: tools.add(2, 3))" in revised.data["diff"]
    assert revised.version == revised.data["sha256"] != plan_gates[0].version


async def test_a_rejected_plan_errors_its_instance(engine: af.Engine) -> None:
    tools = Tools()
    async with agent(engine, LLMPlanner(ScriptedChatModel([fenced(FIRST)])), tools,
                     "in-process") as ops:
        instance = await ops.start("add and deploy", id="p3")
        await open_gates(instance)
        await instance.reject(PLAN_GATE, by="lead", comment="no")
        details = await settle(instance)
    assert details.status == "errored"
    assert details.error is not None and details.error.name == "PlanNotApprovedError"
    assert details.error.message == "the plan was not approved: rejected by lead: no"
    assert issubclass(PlanNotApprovedError, af.NonRetryableError)
    assert tools.calls == []


async def test_an_unanswered_plan_times_out(engine: af.Engine, clock: af.FakeClock) -> None:
    tools = Tools()
    async with agent(engine, LLMPlanner(ScriptedChatModel([fenced(FIRST)])), tools,
                     "in-process", plan_approval_timeout="10 minutes") as ops:
        instance = await ops.start("add and deploy", id="p4")
        [request] = await open_gates(instance)
        assert request.expires_at is not None
        assert (request.expires_at - request.requested_at).total_seconds() == 600
        details = await drive(engine, clock, instance._instance)
    assert details.status == "errored"
    assert details.error is not None
    assert details.error.message == "the plan was not approved: nobody approved it in time"
    assert tools.calls == []


class HandWritten:
    """A planner that skips validation: its plan calls the gated tool with no approval."""

    def __init__(self, source: str) -> None:
        self.source = source

    async def plan(self, request: PlanRequest) -> PlanDraft:
        provenance = Provenance(model="by-hand", prompt_sha256="0" * 64, rounds=1,
                                verdict="valid", planner="HandWritten")
        return PlanDraft(self.source, provenance)


@pytest.mark.parametrize("mode", ["in-process", "process"])
async def test_approving_the_plan_grants_no_gated_tool_call(
    engine: af.Engine, mode: str,
) -> None:
    tools = Tools()
    ungated = ('async def run(event, step):\n'
               '    return await step.do("deploy", lambda: tools.deploy(7),'
               ' retries={"limit": 0})\n')
    async with agent(engine, HandWritten(ungated), tools, mode, max_revisions=0) as ops:
        instance = await ops.start("deploy 7", id="p5")
        [request] = await open_gates(instance)
        assert request.gate == PLAN_GATE
        assert request.data["summary"]["steps"][0]["gated"] is True
        await instance.approve(PLAN_GATE, by="lead")
        details = await settle(instance, timeout=15)
    assert details.status == "errored"
    assert details.error is not None and details.error.name == ApprovalRequiredError.__name__
    assert tools.calls == []
