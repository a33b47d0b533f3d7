"""The pytest plugin used as a user would: test files run by pytester in a fresh pytest."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

LONG_WAITS = '''
import pytest
import agentflow as af


async def release(event, step):
    await step.sleep("let the canary settle", "24 hours")
    decision = await step.wait_for_approval("approve release", prompt="Release?",
                                            timeout="3 days")
    return {"reason": decision.reason, "approved": decision.approved}


@pytest.mark.asyncio
async def test_a_day_of_sleep_and_three_days_of_waiting(agentflow_engine, agentflow_env,
                                                        agentflow_clock):
    start = agentflow_clock.now()
    instance = await agentflow_engine.register("release", release).create()
    details = await agentflow_env.run(instance)
    assert details.status == "complete"
    assert details.output == {"reason": "timeout", "approved": False}
    assert agentflow_clock.now() - start >= 4 * 86400
    assert agentflow_env.skipped >= 4 * 86400


@pytest.mark.asyncio
async def test_an_approval_before_the_timeout(agentflow_engine, agentflow_env):
    instance = await agentflow_engine.register("release", release).create()
    details = await agentflow_env.run(instance, until="waiting")
    assert details.status == "waiting"  # at the gate: the 24 hours passed, the 3 days not
    [request] = await agentflow_engine.approvals()
    assert request.gate == "approve release"
    await agentflow_env.approve(instance, by="ada")
    details = await instance.status()
    assert details.output == {"reason": "approved", "approved": True}
'''


def test_days_of_sleeps_and_timeouts_pass_in_well_under_a_second(
        pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_release=LONG_WAITS)
    started = time.monotonic()
    result = pytester.runpytest_subprocess("-p", "asyncio", "-q")
    elapsed = time.monotonic() - started
    result.assert_outcomes(passed=2)
    durations = pytester.runpytest_subprocess("-p", "asyncio", "-q", "--durations=0",
                                              "--durations-min=0")
    text = durations.stdout.str()
    call_times = [float(line.split("s", 1)[0]) for line in text.splitlines()
                  if " call " in line]
    assert call_times and max(call_times) < 1.0, text
    assert elapsed < 60


RECORD_AND_REPLAY = '''
import json
import pytest
import agentflow as af
from agentflow.dispatch import Loader, create_dynamic_workflow_entrypoint, wrap_workflow_binding
from agentflow.testing import RecordedRun, ReplayDivergenceError, assert_replays, export_run, replay

PLAN = """
async def run(event, step):
    version = event.payload["version"]
    checkout = await step.do("check out", lambda: tools.checkout(version))
    await step.sleep("let the canary settle", "2 hours")
    tests = await step.do("unit tests", lambda: tools.run_tests(checkout["path"]))
    decision = await step.wait_for_approval("approve deploy", prompt="Deploy " + version + "?",
                                            data={"version": version}, timeout="3 days")
    if not decision.approved:
        return {"status": "rejected"}
    deployed = await step.do("deploy", lambda: tools.deploy(checkout["path"]))
    return {"status": "released", "tests": tests, "deployed": deployed}
"""
calls = []


def checkout(version: str) -> dict:
    calls.append("checkout")
    return {"path": "/src/" + version}


def run_tests(path: str) -> int:
    calls.append("run_tests")
    return 12


def deploy(path: str) -> str:
    calls.append("deploy")
    return "deployed " + path


TOOLS = {"checkout": checkout, "run_tests": run_tests, "deploy": deploy}


async def record(engine, env, tmp_path):
    loader = Loader(engine, tools_for=lambda tenant: TOOLS, mode="in-process")
    await loader.registry.register("acme", "release", PLAN, tools=list(TOOLS))
    base = engine.register("plans", create_dynamic_workflow_entrypoint(loader))
    acme = wrap_workflow_binding(base, tenant_id="acme", plan="release")
    instance = await acme.create("r1", params={"version": "1.4"})
    await env.run(instance, until="waiting")
    await env.approve(instance, by="ada")
    run = await export_run(instance)
    return run.save(tmp_path / "runs" / "release.json")


@pytest.mark.asyncio
async def test_a_recorded_run_replays_green(agentflow_engine, agentflow_env, tmp_path):
    path = await record(agentflow_engine, agentflow_env, tmp_path)
    run = RecordedRun.load(path)
    assert run.status == "complete" and run.code["source"] == PLAN
    assert [s.name for s in run.steps] == [
        "check out", "let the canary settle", "unit tests", "approve deploy", "deploy"]
    assert any(h["type"] == "approval.decided" for h in run.history)
    executed = list(calls)
    report = await assert_replays(None, run)  # the run's own plan
    assert report.ok and report.replayed == 5 and report.output == run.output
    assert calls == executed  # no step body ran
    assert json.loads(path.read_text())["format"] == "agentflow.history/1"


@pytest.mark.asyncio
async def test_a_modified_plan_replays_red(agentflow_engine, agentflow_env, tmp_path):
    run = RecordedRun.load(await record(agentflow_engine, agentflow_env, tmp_path))
    revised = PLAN.replace('"unit tests"', '"integration tests"')
    report = await replay(revised, run)
    assert not report.ok
    assert report.divergence.position == 3
    assert report.divergence.message == (
        "replay diverged at step call 3: the code called do 'integration tests' #1, "
        "but the history has do 'unit tests' #1 there")
    with pytest.raises(ReplayDivergenceError, match="integration tests"):
        await assert_replays(revised, run)
'''


def test_recorded_runs_replay_green_and_modified_plans_red(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_replay=RECORD_AND_REPLAY)
    result = pytester.runpytest_subprocess("-p", "asyncio", "-q")
    result.assert_outcomes(passed=2)


CASSETTE_TEST = '''
import pytest
from planners import LLMPlanner, OpenAIChatModel, PlanRequest


@pytest.mark.asyncio
@pytest.mark.agentflow_cassette("plan_valid_first.yaml")
async def test_the_planner_replays_from_a_cassette():
    # Port 9 on loopback: nothing listens; vcrpy answers from the cassette.
    model = OpenAIChatModel("gpt-4.1-mini", base_url="http://127.0.0.1:9/v1", api_key="x")
    # One round: the recorded answer is the plan; its tools are not granted here, so the
    # validator's verdict is not the point, the replayed exchange is.
    draft = await LLMPlanner(model, max_rounds=1).plan(PlanRequest("release 1.4.0"))
    assert draft.rounds == 1 and "async def run(event, step)" in draft.source
    assert draft.provenance.model == "openai:gpt-4.1-mini"
    assert draft.provenance.usage is not None and draft.provenance.usage.total_tokens > 0
'''


def test_a_planner_test_replays_from_a_cassette_without_network(
        pytester: pytest.Pytester) -> None:
    cassettes = pytester.mkdir("cassettes")
    source = Path(__file__).resolve().parents[1] / "planners" / "cassettes" / \
        "plan_valid_first.yaml"
    (cassettes / "plan_valid_first.yaml").write_text(source.read_text())
    pytester.makepyfile(test_planner=CASSETTE_TEST)
    result = pytester.runpytest_subprocess("-p", "asyncio", "-q")
    result.assert_outcomes(passed=1)
    assert "Authorization" not in source.read_text() and "Bearer" not in source.read_text()
