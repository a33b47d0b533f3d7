"""Recorded runs and replay, used directly (the plugin's fixtures come from the entry point)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import agentflow as af
from agentflow.testing import (
    RecordedRun,
    ReplayDivergenceError,
    TimeSkippingEnv,
    assert_replays,
    export_run,
    replay,
)

calls: list[str] = []


async def pipeline(event: af.Event, step: af.Step) -> dict[str, object]:
    built = await step.do("build", lambda: calls.append("build") or {"n": event.payload["n"]})
    await step.sleep("cool down", "6 hours")
    try:
        await step.wait_for_event("go", type="go", timeout="2 days")
        went = True
    except af.WorkflowTimeoutError:
        went = False
    total = await step.do("sum", lambda: calls.append("sum") or built["n"] * 2)
    return {"total": total, "went": went}


async def changed(event: af.Event, step: af.Step) -> dict[str, object]:
    built = await step.do("build", lambda: {"n": event.payload["n"]})
    await step.sleep("cool down", "6 hours")
    return {"total": built["n"] * 2, "went": False}


async def test_time_jumps_in_order_and_the_run_exports(agentflow_engine: af.Engine,
                                                       agentflow_env: TimeSkippingEnv,
                                                       tmp_path: Path) -> None:
    flow = agentflow_engine.register("pipeline", pipeline)
    first = await flow.create("first", params={"n": 2})
    second = await flow.create("second", params={"n": 5})
    await agentflow_env.run(first)
    for instance in (first, second):
        assert (await instance.status()).output == {
            "total": 4 if instance is first else 10, "went": False}
    assert agentflow_env.skipped >= 6 * 3600 + 2 * 86400
    run = await export_run(first)
    path = run.save(tmp_path / "first.json")
    loaded = RecordedRun.load(path)
    assert loaded == run
    assert [s.kind for s in loaded.steps] == ["do", "sleep", "wait", "do"]
    assert loaded.steps[2].state == "errored" and loaded.steps[2].error is not None
    before = list(calls)
    report = await assert_replays(pipeline, loaded)
    assert report.output == {"total": 4, "went": False} and calls == before


async def test_divergences_are_precise(agentflow_engine: af.Engine,
                                       agentflow_env: TimeSkippingEnv) -> None:
    instance = await agentflow_engine.register("pipeline", pipeline).create(params={"n": 1})
    await agentflow_env.run(instance)
    run = await export_run(instance)
    report = await replay(changed, run)
    assert not report.ok and report.divergence is not None
    assert report.divergence.expected == "wait 'go' #1"
    assert "finished after 2 step calls, but the history goes on with wait 'go' #1" in (
        report.divergence.message)
    with pytest.raises(ReplayDivergenceError):
        report.raise_for_divergence()


async def test_a_run_still_waiting_replays_up_to_where_it_is(
        agentflow_engine: af.Engine, agentflow_env: TimeSkippingEnv) -> None:
    instance = await agentflow_engine.register("pipeline", pipeline).create(params={"n": 1})
    await agentflow_env.run(instance, until="waiting")
    report = await replay(pipeline, await export_run(instance))
    assert report.ok and not report.reached_end and report.replayed == 3


def test_bad_history_files_are_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(af.InvalidArgumentError, match="not JSON"):
        RecordedRun.load(bad)
    bad.write_text(json.dumps({"format": "something else"}))
    with pytest.raises(af.InvalidArgumentError, match="not an agentflow history"):
        RecordedRun.load(bad)


async def test_the_cli_exports_a_run_that_replays(agentflow_engine: af.Engine,
                                                  agentflow_env: TimeSkippingEnv,
                                                  tmp_path: Path) -> None:
    instance = await agentflow_engine.register("pipeline", pipeline).create(
        "cli-run", params={"n": 3})
    await agentflow_env.run(instance)
    db = tmp_path / "agentflow-test.db"
    out = tmp_path / "exported.json"
    done = subprocess.run(
        [sys.executable, "-m", "agentflow.cli", "--db", f"sqlite:///{db}", "export", "cli-run",
         "-o", str(out)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "4 steps, status complete" in done.stdout
    await assert_replays(pipeline, RecordedRun.load(out))
