"""step.wait_for_approval on a static workflow: the request, the decision, timeouts, refusals,
the inbox and its filters, history and replay (real SQLite file, fake clock)."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

import agentflow as af
from tests.approvals.conftest import at, at_gate, finished, gate_named, gated_flow, open_gates
from tests.conftest import drive, terminated_first, wait_for

WORKFLOW = "deploys"


@pytest.fixture
def deploys(engine: af.Engine, seen: list[af.Decision]) -> af.WorkflowBinding:
    return engine.register(WORKFLOW, gated_flow(seen))


async def asked_again(instance: af.Instance, timeout: float = 5.0) -> None:
    """Real-time wait until a restarted instance asked its gate a second time."""

    async def poll() -> None:
        while True:
            types = [e.type async for e in instance.events(follow=False)]
            if types.count("approval.requested") >= 2 and (
                    await instance.status()).status == "waiting":
                return
            await asyncio.sleep(0.005)

    await asyncio.wait_for(poll(), timeout)


# -- the request --------------------------------------------------------------------------------
async def test_request_is_listed_with_prompt_data_and_expiry(
    engine: af.Engine, deploys: af.WorkflowBinding, clock: af.FakeClock,
) -> None:
    started = clock.now()
    instance = await at_gate(deploys, "r1", target="eu")
    [request] = await engine.approvals()
    assert isinstance(request, af.ApprovalRequest)
    assert request.instance_id == "r1"
    assert request.workflow_name == WORKFLOW
    assert request.gate == "deploy" and request.count == 1
    assert request.prompt == "Deploy the build to eu?"
    assert request.data == {"target": "eu", "replicas": 3}
    assert request.version is None  # static code has no version
    assert request.tenant_id is None
    assert request.requested_at == at(started)
    assert request.expires_at == request.requested_at + timedelta(hours=1)
    assert await instance.approvals() == [request]
    steps = await instance.steps()
    assert [(s.name, s.kind, s.state) for s in steps] == [
        ("prepare", "do", "completed"), ("deploy", "wait", "waiting")]


# -- deciding -----------------------------------------------------------------------------------
async def test_approve_releases_the_plan_with_who_why_and_when(
    engine: af.Engine, deploys: af.WorkflowBinding, clock: af.FakeClock,
    seen: list[af.Decision],
) -> None:
    instance = await at_gate(deploys, "a1")
    await clock.advance(60)  # the decision comes a minute later
    decided_at = clock.now()
    await instance.approve(by="ada", comment="looks good")
    details = await finished(instance)
    assert details.status == "complete", details.error
    assert details.output == {"outcome": "deployed", "to": {"target": "prod", "replicas": 3},
                              "by": "ada", "comment": "looks good", "edited": False}
    [decision] = seen
    assert decision == af.Decision(
        approved=True, reason="approved", by="ada", comment="looks good",
        data={"target": "prod", "replicas": 3}, at=at(decided_at), version=None, edited=False)
    assert await engine.approvals() == []


async def test_reject_is_a_value_the_plan_acts_on(
    deploys: af.WorkflowBinding, seen: list[af.Decision],
) -> None:
    instance = await at_gate(deploys, "j1")
    await instance.reject(by="bob", comment="not on a Friday")
    details = await finished(instance)
    assert details.status == "complete", details.error
    assert details.output == {"outcome": "skipped", "reason": "rejected", "by": "bob",
                              "comment": "not on a Friday"}
    [decision] = seen
    assert decision.approved is False and decision.reason == "rejected"
    assert decision.data == {"target": "prod", "replicas": 3} and decision.edited is False


async def test_edited_data_reaches_the_plan(
    deploys: af.WorkflowBinding, seen: list[af.Decision],
) -> None:
    instance = await at_gate(deploys, "e1")
    await instance.approve(by="ada", data={"target": "staging", "replicas": 1})
    details = await finished(instance)
    assert details.output["to"] == {"target": "staging", "replicas": 1}
    assert details.output["edited"] is True
    assert seen[0].data == {"target": "staging", "replicas": 1} and seen[0].edited


async def test_approving_with_data_none_is_an_edit_to_none(
    deploys: af.WorkflowBinding, seen: list[af.Decision],
) -> None:
    instance = await at_gate(deploys, "e2")
    await instance.approve(data=None)
    await finished(instance)
    assert seen[0].data is None and seen[0].edited is True


# -- timeouts -----------------------------------------------------------------------------------
async def test_timeout_is_a_rejection_with_reason_timeout(
    engine: af.Engine, clock: af.FakeClock, deploys: af.WorkflowBinding,
    seen: list[af.Decision],
) -> None:
    instance = await at_gate(deploys, "t1", timeout="2 hours")
    requested = clock.now()
    details = await drive(engine, clock, instance)
    assert clock.now() == requested + 7200
    assert details.status == "complete", details.error
    assert details.output == {"outcome": "skipped", "reason": "timeout", "by": None,
                              "comment": None}
    [decision] = seen
    assert decision == af.Decision(approved=False, reason="timeout",
                                   data={"target": "prod", "replicas": 3}, version=None)
    assert await engine.approvals() == []
    # a decision after the timeout is refused
    with pytest.raises(af.ApprovalDecidedError):
        await instance.approve(by="late")
    with pytest.raises(af.ApprovalDecidedError):
        await instance.reject(gate="deploy")


async def test_on_timeout_raise_gives_a_catchable_workflow_timeout(
    engine: af.Engine, clock: af.FakeClock, deploys: af.WorkflowBinding,
    seen: list[af.Decision],
) -> None:
    instance = await at_gate(deploys, "t2", on_timeout="raise")
    details = await drive(engine, clock, instance)
    assert details.status == "complete", details.error
    assert details.output == {"outcome": "caught timeout", "error": "WorkflowTimeoutError"}
    assert seen == []
    events = [e.type async for e in instance.events(follow=False)]
    assert "wait.timed_out" in events and "approval.decided" not in events


async def test_uncaught_timeout_raise_errors_the_instance(
    engine: af.Engine, clock: af.FakeClock,
) -> None:
    async def strict(event: af.Event, step: af.Step) -> str:
        await step.wait_for_approval("go", prompt="Go?", timeout="5 minutes",
                                     on_timeout="raise")
        return "went"

    instance = await engine.register("strict", strict).create(id="s1")
    await wait_for(instance, "waiting")
    details = await drive(engine, clock, instance)
    assert details.status == "errored"
    assert details.error is not None and details.error.name == "WorkflowTimeoutError"


async def test_a_decision_after_the_deadline_is_refused_even_before_the_worker_wakes(
    db_url: str, clock: af.FakeClock,
) -> None:
    seen: list[af.Decision] = []
    async with af.Engine.open(db_url, clock=clock, poll_interval=0.05) as engine:
        instance = await engine.register(WORKFLOW, gated_flow(seen)).create(id="late")
        await wait_for(instance, "waiting")
    await clock.advance(2 * 3600)  # the one-hour gate expired while no worker ran
    async with af.Engine.open(db_url, clock=clock, worker=False) as engine:
        engine.register(WORKFLOW, gated_flow(seen))
        late = await engine.get("late")
        listed = await engine.approvals()
        refused = False
        try:
            await late.approve(by="late")
        except af.ApprovalDecidedError:
            refused = True
    async with af.Engine.open(db_url, clock=clock, poll_interval=0.05) as engine:
        engine.register(WORKFLOW, gated_flow(seen))
        # Its deadline is past: a worker takes it at once and records the timeout.
        details = await wait_for(await engine.get("late"), "complete", "errored")
    assert details.output["outcome"] == "skipped" and seen[-1].reason == "timeout", (
        f"expired gate decided late: {details.output}")
    assert refused
    assert listed == []


# -- refusals -----------------------------------------------------------------------------------
async def test_a_gate_takes_one_decision(
    deploys: af.WorkflowBinding, seen: list[af.Decision],
) -> None:
    instance = await at_gate(deploys, "d1")
    await instance.approve(by="ada")
    with pytest.raises(af.ApprovalDecidedError, match="decided already"):
        await instance.reject(by="bob")
    details = await finished(instance)
    with pytest.raises(af.ApprovalDecidedError):
        await instance.approve("deploy", by="carol")
    assert details.output["by"] == "ada"
    assert [d.by for d in seen] == ["ada"]
    assert issubclass(af.ApprovalDecidedError, af.AgentflowError)


async def test_unknown_gate_and_no_gate_are_not_found(
    engine: af.Engine, deploys: af.WorkflowBinding,
) -> None:
    instance = await at_gate(deploys, "n1")
    with pytest.raises(af.ApprovalNotFoundError, match="'ship'"):
        await instance.approve("ship")
    with pytest.raises(af.ApprovalNotFoundError):
        await instance.reject("ship")
    assert len(await instance.approvals()) == 1  # the real gate is untouched

    async def plain(event: af.Event, step: af.Step) -> str:
        await step.sleep("nap", "1 hour")
        return "done"

    sleeper = await engine.register("plain", plain).create(id="n2")
    await wait_for(sleeper, "waiting")
    with pytest.raises(af.ApprovalNotFoundError, match="no open approval"):
        await sleeper.approve()
    assert issubclass(af.ApprovalNotFoundError, af.NotFoundError)


async def test_second_gate_is_decided_by_name_after_the_first(
    deploys: af.WorkflowBinding,
) -> None:
    instance = await at_gate(deploys, "g2", second=True)
    await instance.approve("deploy")
    notify = await gate_named(instance, "notify")  # the run moves on to the second gate
    assert notify.prompt == "Tell the customers?" and notify.data is None
    with pytest.raises(af.ApprovalDecidedError):
        await instance.approve("deploy")
    await instance.reject("notify")
    details = await finished(instance)
    assert details.output == {"deploy": True, "notify": False}


async def test_two_parallel_gates_are_both_open_and_a_decision_must_name_one(
    engine: af.Engine,
) -> None:
    async def both(event: af.Event, step: af.Step) -> list[bool]:
        eu, us = await step.all(
            step.wait_for_approval("deploy eu", prompt="EU?"),
            step.wait_for_approval("deploy us", prompt="US?"))
        return [eu.approved, us.approved]

    instance = await engine.register("both", both).create(id="p1")
    await wait_for(instance, "waiting")
    await asyncio.sleep(0.1)
    gates = sorted(r.gate for r in await instance.approvals())
    assert gates == ["deploy eu", "deploy us"], gates
    with pytest.raises(af.InvalidArgumentError, match="name the gate"):
        await instance.approve()
    await instance.reject("deploy us", by="ada")
    await asyncio.sleep(0.1)  # the run wakes, replays, and hibernates again at the other gate
    assert [r.gate for r in await instance.approvals()] == ["deploy eu"]
    await instance.approve(by="ada")  # one gate open: no name needed
    details = await instance.wait(timeout=5)
    assert details.status == "complete", details.error
    assert details.output == [True, False]


async def test_a_gate_beside_a_sleep_is_asked_before_the_sleep_ends(
    engine: af.Engine, clock: af.FakeClock,
) -> None:
    async def gate_and_timer(event: af.Event, step: af.Step) -> bool:
        _, decision = await step.all(
            step.sleep("cool down", "1 hour"), step.wait_for_approval("go", prompt="Go?"))
        return decision.approved

    instance = await engine.register("gate_and_timer", gate_and_timer).create(id="gs")
    await wait_for(instance, "waiting")
    await asyncio.sleep(0.05)
    assert [r.gate for r in await instance.approvals()] == ["go"]
    await instance.approve()
    await asyncio.sleep(0.1)
    assert (await instance.status()).status == "waiting"  # still sleeping
    details = await drive(engine, clock, instance)
    assert details.status == "complete" and details.output is True


async def test_wrong_version_is_stale_and_the_gate_stays_open(
    engine: af.Engine, deploys: af.WorkflowBinding, seen: list[af.Decision],
) -> None:
    instance = await at_gate(deploys, "v1")
    with pytest.raises(af.StaleApprovalError, match="'0123abcd'"):
        await instance.approve(by="ada", version="0123abcd")
    with pytest.raises(af.StaleApprovalError):
        await instance.reject(version="0123abcd")
    assert [r.instance_id for r in await engine.approvals()] == ["v1"]
    assert (await instance.status()).status == "waiting"
    # the version the request names (None for static code) is accepted
    await instance.approve(by="ada", version=None)
    assert (await finished(instance)).output["by"] == "ada"
    assert issubclass(af.StaleApprovalError, af.InvalidStateError)


async def test_a_paused_instance_takes_the_decision_and_acts_on_it_after_resume(
    engine: af.Engine, clock: af.FakeClock, deploys: af.WorkflowBinding,
) -> None:
    instance = await at_gate(deploys, "pz")
    await instance.pause()
    assert (await instance.status()).status == "paused"
    await instance.approve(by="ada", comment="go when resumed")
    await asyncio.sleep(0.2)  # the worker leaves a paused instance alone
    assert (await instance.status()).status == "paused"
    await instance.resume()
    details = await drive(engine, clock, instance)
    assert details.status == "complete", details.error
    assert details.output["comment"] == "go when resumed"


async def test_a_decided_gate_of_a_paused_instance_leaves_the_inbox(
    engine: af.Engine, deploys: af.WorkflowBinding,
) -> None:
    instance = await at_gate(deploys, "pz2")
    await instance.pause()
    await instance.approve(by="ada")
    assert await instance.approvals() == []
    assert await engine.approvals() == []


async def test_restart_asks_again_and_the_new_request_can_be_decided(
    engine: af.Engine, deploys: af.WorkflowBinding, seen: list[af.Decision],
) -> None:
    instance = await at_gate(deploys, "rs")
    await instance.restart()
    await asked_again(instance)
    await instance.approve(by="after restart")
    details = await finished(instance)
    assert details.output["by"] == "after restart"
    events = [e.type async for e in instance.events(follow=False)]
    assert events.count("approval.requested") == 2
    assert events.count("approval.decided") == 1


async def test_restart_lists_the_gate_once(
    engine: af.Engine, deploys: af.WorkflowBinding,
) -> None:
    instance = await at_gate(deploys, "rs2")
    await instance.restart()
    await asked_again(instance)
    events = [e.type async for e in instance.events(follow=False)]
    assert events.count("approval.requested") == 2  # it was asked again
    assert len(await engine.approvals()) == 1


# -- bad input ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("options", "error", "fragment"), [
    pytest.param({"prompt": "   "}, "InvalidArgumentError", "prompt must be a non-empty",
                 id="blank-prompt"),
    pytest.param({"prompt": ""}, "InvalidArgumentError", "prompt", id="empty-prompt"),
    pytest.param({"prompt": None}, "InvalidArgumentError", "prompt", id="no-prompt"),
    pytest.param({"on_timeout": "bogus"}, "InvalidArgumentError", "'bogus'",
                 id="on-timeout"),
    pytest.param({"data": {1, 2}}, "PayloadError", "JSON", id="non-json-data"),
    pytest.param({"data": "x" * (64 * 1024 + 1)}, "PayloadError", "65536",
                 id="oversized-data"),
    pytest.param({"timeout": "soon"}, "InvalidDurationError", "'soon'", id="timeout"),
    pytest.param({"name": ""}, "InvalidStepNameError", "", id="empty-name"),
])
async def test_bad_requests_error_the_instance_with_a_typed_error(
    engine: af.Engine, options: dict[str, Any], error: str, fragment: str,
) -> None:
    async def asks(event: af.Event, step: af.Step) -> str:
        args: dict[str, Any] = {"prompt": "Go?", **options}
        name = args.pop("name", "go")
        await step.wait_for_approval(name, **args)
        return "asked"

    instance = await engine.register("bad", asks).create()
    details = await wait_for(instance, "errored", "complete", "waiting")
    assert details.status == "errored"
    assert details.error is not None and details.error.name == error
    assert fragment in details.error.message
    assert await engine.approvals() == []


async def test_a_request_at_the_limit_is_accepted(engine: af.Engine) -> None:
    async def asks(event: af.Event, step: af.Step) -> int:
        decision = await step.wait_for_approval("big", prompt="p", data="x" * 60_000)
        return len(decision.data)

    instance = await engine.register("big", asks).create()
    await open_gates(instance)
    await instance.approve()
    assert (await finished(instance)).output == 60_000


@pytest.mark.parametrize(("options", "error", "fragment"), [
    pytest.param({"by": 42}, af.InvalidArgumentError, "by must be a string", id="by-int"),
    pytest.param({"comment": ["x"]}, af.InvalidArgumentError, "comment", id="comment-list"),
    pytest.param({"comment": "x" * 10_001}, af.InvalidArgumentError, "10,000",
                 id="comment-long"),
    pytest.param({"data": {1, 2}}, af.PayloadError, "JSON", id="data-set"),
    pytest.param({"data": object()}, af.PayloadError, "JSON", id="data-object"),
])
async def test_bad_decisions_are_refused_and_the_gate_stays_open(
    engine: af.Engine, deploys: af.WorkflowBinding, options: dict[str, Any],
    error: type[Exception], fragment: str,
) -> None:
    instance = await at_gate(deploys, "bd")
    with pytest.raises(error, match=fragment):
        await instance.approve(**options)
    assert len(await engine.approvals()) == 1
    await instance.approve(by="ada")
    assert (await finished(instance)).output["by"] == "ada"


# -- history ------------------------------------------------------------------------------------
async def test_request_and_decision_are_in_the_history(
    deploys: af.WorkflowBinding,
) -> None:
    instance = await at_gate(deploys, "h1")
    await instance.reject(by="bob", comment="wait for QA")
    await finished(instance)
    events = [e async for e in instance.events(follow=False)]
    types = [e.type for e in events]
    order = [types.index(t) for t in ("approval.requested", "approval.decided",
                                       "wait.completed", "instance.completed")]
    assert order == sorted(order), types
    [requested] = [e for e in events if e.type == "approval.requested"]
    assert requested.step == "deploy"
    assert requested.data["prompt"] == "Deploy the build to prod?"
    assert requested.data["data"] == {"target": "prod", "replicas": 3}
    assert requested.data["version"] is None and requested.data["count"] == 1
    [decided] = [e for e in events if e.type == "approval.decided"]
    assert decided.step == "deploy"
    assert {k: decided.data[k] for k in ("approved", "by", "comment", "edited", "version")} == {
        "approved": False, "by": "bob", "comment": "wait for QA", "edited": False,
        "version": None}


# -- replay -------------------------------------------------------------------------------------
async def test_the_decision_is_the_same_when_the_run_replays(
    engine: af.Engine, clock: af.FakeClock, deploys: af.WorkflowBinding,
    seen: list[af.Decision],
) -> None:
    instance = await at_gate(deploys, "rp", sleep_after=True)
    await clock.advance(30)
    await instance.approve(by="ada", comment="ok", data={"target": "eu", "replicas": 2})
    await wait_for(instance, "waiting")  # asleep after the gate
    await asyncio.sleep(0.05)
    details = await drive(engine, clock, instance)
    assert details.status == "complete", details.error
    assert len(seen) == 2  # the first run, and the replay after the sleep
    assert seen[0] == seen[1]
    assert seen[1].data == {"target": "eu", "replicas": 2} and seen[1].by == "ada"
    steps = await instance.steps()
    assert [(s.name, s.state) for s in steps] == [
        ("prepare", "completed"), ("deploy", "completed"), ("cool down", "completed")]


async def test_a_timed_out_decision_is_the_same_when_the_run_replays(
    engine: af.Engine, clock: af.FakeClock, deploys: af.WorkflowBinding,
    seen: list[af.Decision],
) -> None:
    instance = await at_gate(deploys, "rt", sleep_after=True, timeout="10 minutes")
    details = await drive(engine, clock, instance)
    assert details.status == "complete", details.error
    assert len(seen) == 2 and seen[0] == seen[1] and seen[0].reason == "timeout"


# -- the inbox ----------------------------------------------------------------------------------
async def test_inbox_filters_by_workflow_age_and_limit_oldest_first(
    engine: af.Engine, clock: af.FakeClock, deploys: af.WorkflowBinding,
    seen: list[af.Decision],
) -> None:
    reports = engine.register("reports", gated_flow(seen))
    old = await at_gate(deploys, "old", timeout="1 day")
    await clock.advance(2 * 3600)
    mid = await at_gate(reports, "mid", timeout="1 day")
    await clock.advance(600)
    new = await at_gate(deploys, "new", timeout="1 day")

    assert [r.instance_id for r in await engine.approvals()] == ["old", "mid", "new"]
    assert [r.instance_id for r in await engine.approvals(workflow=WORKFLOW)] == [
        "old", "new"]
    assert [r.instance_id for r in await engine.approvals(workflow="reports")] == ["mid"]
    assert await engine.approvals(workflow="nope") == []
    assert [r.instance_id for r in await engine.approvals(older_than="1 hour")] == ["old"]
    assert [r.instance_id for r in await engine.approvals(older_than="5 minutes")] == [
        "old", "mid"]
    assert [r.instance_id for r in await engine.approvals(older_than=0)] == [
        "old", "mid", "new"]
    assert await engine.approvals(older_than="3 hours") == []
    assert [r.instance_id for r in await engine.approvals(limit=2)] == ["old", "mid"]
    assert await engine.approvals(tenant="acme") == []  # static instances have no tenant

    await mid.approve()
    await finished(mid)
    assert [r.instance_id for r in await engine.approvals()] == ["old", "new"]
    await old.terminate()
    assert [r.instance_id for r in await engine.approvals()] == ["new"]
    with pytest.raises(af.ApprovalNotFoundError):
        await old.approve()
    assert new is not None


@pytest.mark.parametrize(("options", "error"), [
    ({"limit": 0}, af.InvalidArgumentError),
    ({"limit": "10"}, af.InvalidArgumentError),
    ({"older_than": "a while"}, af.InvalidDurationError),
])
async def test_inbox_rejects_bad_filters(engine: af.Engine, options: dict[str, Any],
                                         error: type[Exception]) -> None:
    with pytest.raises(error):
        await engine.approvals(**options)


async def test_a_gate_reached_after_a_sibling_step_commits_late_is_asked_too(
    db_url: str, db_path: Path,
) -> None:
    # The run's end waits for its branches' journal writes: a branch whose quick step is
    # committed after the other branch hibernated still reaches (and asks) its gate.
    if not db_url.startswith("sqlite"):
        pytest.skip("holds the SQLite write lock from another connection")

    def prepare() -> int:  # meanwhile another process holds the write lock for 50 ms
        other = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
        other.execute("BEGIN IMMEDIATE")
        threading.Timer(0.05, lambda: (other.execute("COMMIT"), other.close())).start()
        return 1

    async def prepare_then_ask(step: af.Step) -> bool:
        await step.do("prepare", prepare)
        return (await step.wait_for_approval("deploy us", prompt="US?")).approved

    async def both(event: af.Event, step: af.Step) -> list[bool]:
        us, eu = await step.all(prepare_then_ask(step),
                                step.wait_for_approval("deploy eu", prompt="EU?"))
        return [us, eu.approved]

    async with af.Engine.open(db_url, poll_interval=0.05) as engine:
        instance = await engine.register("both", both).create(id="late")
        await wait_for(instance, "waiting")
        await asyncio.sleep(0.2)
        assert sorted(r.gate for r in await instance.approvals()) == ["deploy eu", "deploy us"]
        assert [h async for h in instance.events(follow=False)
                if h.type == "instance.started"][-1].data == {"run": 1}  # asked in run 1


async def test_a_decision_racing_termination_is_refused_and_writes_nothing(
    engine: af.Engine, deploys: af.WorkflowBinding, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The instance is terminated after the decision found its gate open and before the
    decision is written: the write sees it and refuses; nothing follows the end."""
    instance = await at_gate(deploys, "race1")
    terminated_first(monkeypatch, engine, "decide_approval", instance)
    with pytest.raises(af.ApprovalNotFoundError, match="terminated"):
        await instance.approve(by="ada")
    types = [e.type async for e in instance.events(follow=False)]
    assert types[-1] == "instance.terminated"
    assert "approval.decided" not in types
