"""planners.summarize and plan_diff: what a person approving a plan is shown."""

from __future__ import annotations

import pytest

from planners import PlanSummary, StepSummary, plan_diff, summarize

PLAN = '''\
async def run(event, step):
    async def ship(order):
        label = tools.label(order["id"])
        return await tools.ship(label)

    order = await step.do("fetch order", lambda: tools.fetch(event.payload["id"]))
    decision = await step.wait_for_approval("approve shipping", prompt="Ship?",
                                            data=order)
    if not decision.approved:
        return "stopped"
    shipped = await step.do("ship", ship)
    await step.sleep("cool down", "1 hour")
    await step.wait_for_event("delivered", type="delivery", timeout="2 days")
    for region in ["eu", "us"]:
        await step.do("notify " + region, lambda: tools.notify(region))
    return shipped
'''


def test_steps_in_order_with_kinds_tools_gates_and_lines() -> None:
    summary = summarize(PLAN, gated=["ship"])
    assert isinstance(summary, PlanSummary)
    assert summary.steps == (
        StepSummary("step", "fetch order", 6, ("fetch",), False),
        StepSummary("approval", "approve shipping", 7, (), False),
        StepSummary("step", "ship", 11, ("label", "ship"), True),  # a nested plan function
        StepSummary("sleep", "cool down", 12, (), False),
        StepSummary("wait", "delivered", 13, (), False),
        StepSummary("step", "'notify ' + region", 15, ("notify",), False),
    )
    assert summary.tools == ("fetch", "label", "ship", "notify")
    assert summary.gates == ("approve shipping",)
    assert summary.parallel is False


def test_as_dict_and_text() -> None:
    summary = summarize(PLAN, gated=["ship"])
    data = summary.as_dict()
    assert data["gates"] == ["approve shipping"] and data["parallel"] is False
    assert data["steps"][2] == {"kind": "step", "name": "ship", "line": 11,
                                "tools": ["label", "ship"], "gated": True}
    lines = summary.text().splitlines()
    assert lines[0] == "line   6  step     fetch order -> tools.fetch"
    assert lines[1] == "line   7  approval approve shipping"
    assert lines[2] == "line  11  step     ship -> tools.label, tools.ship  [needs approval]"
    assert lines[3].startswith("line  12  sleep    cool down")
    assert len(lines) == 6


def test_parallel_steps_are_flagged_and_listed_in_argument_order() -> None:
    source = '''\
async def run(event, step):
    a, b = await step.all(step.do("left", lambda: tools.a()), step.do("right", lambda: tools.b()))
    return [a, b]
'''
    summary = summarize(source)
    assert summary.parallel is True
    assert [(s.name, s.tools, s.line) for s in summary.steps] == [
        ("left", ("a",), 2), ("right", ("b",), 2)]


def test_a_step_calling_no_tool_and_unparseable_source() -> None:
    quiet = summarize("async def run(event, step):\n    return await step.do('x', lambda: 1)\n")
    assert quiet.steps == (StepSummary("step", "x", 2),) and quiet.tools == ()
    broken = summarize("async def run(event, step)\n    return 1\n")
    assert broken == PlanSummary((), (), (), False)
    assert broken.text() == "(no steps)"
    assert summarize("", gated=["x"]).text() == "(no steps)"


@pytest.mark.parametrize("body", [
    pytest.param("lambda: deploy_all()", id="lambda-calls-helper"),
    pytest.param("fn=lambda: tools.deploy('prod')", id="keyword-fn"),
    pytest.param("deploy_all", id="helper-by-name"),
    pytest.param("lambda: tools.deploy('prod')", id="lambda"),
])
def test_a_gated_tool_in_any_step_body_is_shown(body: str) -> None:
    source = f'''\
async def run(event, step):
    def deploy_all():
        return tools.deploy("prod")

    return await step.do("deploy", {body})
'''
    [only] = summarize(source, gated=["deploy"]).steps
    assert only.tools == ("deploy",)
    assert only.gated is True


def test_plan_diff_is_a_unified_diff_from_previous_to_revised() -> None:
    revised = PLAN.replace('"1 hour"', '"2 hours"')
    diff = plan_diff(PLAN, revised)
    lines = diff.splitlines()
    assert lines[0] == "--- previous plan" and lines[1] == "+++ revised plan"
    assert '-    await step.sleep("cool down", "1 hour")' in lines
    assert '+    await step.sleep("cool down", "2 hours")' in lines
    assert sum(1 for line in lines if line.startswith(("-", "+"))) == 4
    assert plan_diff(PLAN, PLAN) == ""
