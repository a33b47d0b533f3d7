"""The pytest plugin used as a user would: test files run by pytester in a fresh pytest."""

from __future__ import annotations

import time

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
