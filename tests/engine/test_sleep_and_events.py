"""Durable sleeps and event waits: hibernation, buffering, FIFO, timeouts, replay."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import agentflow as af
from tests.conftest import counter, drive, next_wake, rows, terminated_first, wait_for


async def test_a_sleeping_instance_holds_only_rows(
    engine: af.Engine, clock: af.FakeClock, db_path: Path
) -> None:
    async def run(event: af.Event, step: af.Step) -> str:
        await step.sleep("long nap", "3 days")
        return "rested"

    instance = await engine.register("wf", run).create()
    await wait_for(instance, "waiting")
    assert engine._worker is not None and not engine._worker._runs  # no task, no slot
    wake = rows(db_path, "SELECT wake_at FROM steps WHERE name = 'long nap'")[0][0]
    assert wake == clock.now() + 3 * 86400  # written before sleeping
    assert await next_wake(engine) == wake
    await clock.advance(3 * 86400 - 1)
    await asyncio.sleep(0.05)
    assert (await instance.status()).status == "waiting"
    await clock.advance(1)
    assert (await wait_for(instance, "complete")).output == "rested"


async def test_sleep_until_accepts_aware_datetimes_and_epoch_seconds(
    engine: af.Engine, clock: af.FakeClock
) -> None:
    start = clock.now()
    target = datetime.fromtimestamp(start, tz=UTC) + timedelta(hours=5)

    async def run(event: af.Event, step: af.Step) -> float:
        await step.sleep_until("until datetime", target)
        await step.sleep_until("until epoch", start + 6 * 3600)
        await step.sleep_until("in the past", start - 10)
        return await step.do("now", lambda: clock.now())

    instance = await engine.register("wf", run).create()
    details = await drive(engine, clock, instance)
    assert details.output == start + 6 * 3600


async def until_history(instance: af.Instance, type: str, *, step: str,
                        timeout: float = 10.0) -> None:
    """Real-time wait until the instance's history has a ``type`` event of ``step``."""
    async def seen() -> None:
        while not [e async for e in instance.events(follow=False)
                   if e.type == type and e.step == step]:
            await asyncio.sleep(0.01)

    await asyncio.wait_for(seen(), timeout)


async def test_replay_after_the_wake_time_does_not_sleep_again(
    engine: af.Engine, clock: af.FakeClock
) -> None:
    calls, hit = counter()

    async def run(event: af.Event, step: af.Step) -> str:
        await step.sleep("first", "1 hour")
        hit("after first")
        ev = await step.wait_for_event("go", type="go")
        return str(ev.payload)

    instance = await engine.register("wf", run).create()
    await wait_for(instance, "waiting")
    await clock.advance(3600)
    await until_history(instance, "wait.started", step="go")  # woke, now waits for 'go'
    await wait_for(instance, "waiting")
    when = clock.now()
    await instance.send_event("go", "now")
    assert (await wait_for(instance, "complete")).output == "now"
    assert clock.now() == when  # the replay did not wait for 'first' again
    assert calls == {"after first": 2}


async def test_events_sent_before_the_wait_are_buffered_fifo_per_type(
    engine: af.Engine, clock: af.FakeClock
) -> None:
    async def run(event: af.Event, step: af.Step) -> list[Any]:
        await step.sleep("let events pile up", "1 minute")
        got = []
        for n in range(3):
            ev = await step.wait_for_event(f"approval {n}", type="approve")
            got.append(ev.payload)
        other = await step.wait_for_event("other", type="reject")
        return [got, other.payload, other.type]

    instance = await engine.register("wf", run).create()
    await wait_for(instance, "waiting")
    await instance.send_event("approve", {"n": 1})
    await instance.send_event("reject", "no")
    await instance.send_event("approve", {"n": 2})
    await instance.send_event("approve", {"n": 3})
    details = await drive(engine, clock, instance)
    assert details.output == [[{"n": 1}, {"n": 2}, {"n": 3}], "no", "reject"]


async def test_an_event_sent_before_the_first_run_is_received(db_path: Path) -> None:
    async def run(event: af.Event, step: af.Step) -> Any:
        return (await step.wait_for_event("w", type="go", timeout="1 hour")).payload

    async with af.Engine.open(f"sqlite:///{db_path}", worker=False) as api:
        api.register("wf", run)
        instance = await api.binding("wf").create(id="early")
        await instance.send_event("go", {"early": True})
        assert (await instance.status()).status == "queued"
    async with af.Engine.open(f"sqlite:///{db_path}") as engine:
        engine.register("wf", run)
        done = await wait_for(await engine.binding("wf").get("early"), "complete")
        assert done.output == {"early": True}


@pytest.mark.parametrize("timeout", ["1 hour", 0], ids=["wait", "past-deadline"])
async def test_an_event_sent_while_the_run_is_in_a_step_is_received(
    engine: af.Engine, timeout: str | int,
) -> None:
    # The run was claimed with an empty inbox, so it need not read the inbox before a wait
    # that hibernates: the suspend must find the event and run the instance again. A wait
    # already past its deadline must read it (an event sent in time wins over the timeout).
    entered, release = asyncio.Event(), asyncio.Event()

    async def slow() -> str:
        entered.set()
        await release.wait()
        return "done"

    async def run(event: af.Event, step: af.Step) -> Any:
        await step.do("slow", slow)
        return (await step.wait_for_event("w", type="go", timeout=timeout)).payload

    instance = await engine.register("wf", run).create()
    await asyncio.wait_for(entered.wait(), 10)
    await instance.send_event("go", {"sent": "mid-run"})
    release.set()
    done = await wait_for(instance, "complete")
    assert done.output == {"sent": "mid-run"}
    types = [e.type async for e in instance.events(follow=False)]
    assert "instance.waiting" not in types  # it never hibernated with the event in its inbox


async def test_a_completed_wait_returns_the_same_event_on_replay(
    engine: af.Engine, clock: af.FakeClock
) -> None:
    seen: list[af.StepEvent] = []

    async def run(event: af.Event, step: af.Step) -> None:
        seen.append(await step.wait_for_event("w", type="ping"))
        await step.sleep("s", 10)

    instance = await engine.register("wf", run).create()
    await wait_for(instance, "waiting")
    await instance.send_event("ping", {"v": 1})
    await instance.send_event("ping", {"v": 2})
    await drive(engine, clock, instance)
    assert len(seen) == 2 and seen[0] == seen[1]
    assert seen[0].payload == {"v": 1} and seen[0].type == "ping"
    assert seen[0].timestamp == datetime.fromtimestamp(clock.now() - 10, tz=UTC)


async def test_a_wait_timeout_is_catchable_and_the_next_wait_gets_the_next_event(
    engine: af.Engine, clock: af.FakeClock
) -> None:
    async def run(event: af.Event, step: af.Step) -> list[Any]:
        out: list[Any] = []
        try:
            await step.wait_for_event("first", type="approve", timeout="2 hours")
        except af.WorkflowTimeoutError as exc:
            out.append(f"timed out: {type(exc).__name__}")
        ev = await step.wait_for_event("second", type="approve", timeout="2 hours")
        out.append(ev.payload)
        return out

    instance = await engine.register("wf", run).create()
    await wait_for(instance, "waiting")
    await clock.advance(2 * 3600)
    await until_history(instance, "wait.started", step="second")
    await wait_for(instance, "waiting")
    await instance.send_event("approve", "late but fine")
    details = await wait_for(instance, "complete")
    assert details.output == ["timed out: WorkflowTimeoutError", "late but fine"]
    types = [e.type async for e in instance.events(follow=False)]
    assert "wait.timed_out" in types and types.count("wait.completed") == 1


async def test_an_uncaught_wait_timeout_errors_the_instance(
    engine: af.Engine, clock: af.FakeClock
) -> None:
    async def run(event: af.Event, step: af.Step) -> None:
        await step.wait_for_event("approval", type="approve", timeout="3 days")

    instance = await engine.register("wf", run).create()
    details = await drive(engine, clock, instance)
    assert details.status == "errored"
    assert details.error is not None and details.error.name == "WorkflowTimeoutError"
    assert "approval" in details.error.message


async def test_an_event_of_another_type_does_not_wake_the_instance(
    engine: af.Engine, db_path: Path
) -> None:
    async def run(event: af.Event, step: af.Step) -> Any:
        return (await step.wait_for_event("w", type="approve")).payload

    instance = await engine.register("wf", run).create()
    await wait_for(instance, "waiting")
    await instance.send_event("unrelated", 1)
    await asyncio.sleep(0.1)
    assert (await instance.status()).status == "waiting"
    assert rows(db_path, "SELECT runs FROM instances")[0][0] == 1
    await instance.send_event("approve", 2)
    assert (await wait_for(instance, "complete")).output == 2


async def test_event_payload_and_the_event_record(engine: af.Engine) -> None:
    async def run(event: af.Event, step: af.Step) -> dict[str, Any]:
        return {"payload": event.payload, "id": event.instance_id,
                "workflow": event.workflow_name, "ts": event.timestamp.isoformat()}

    instance = await engine.register("orders", run).create(id="order-7", params={"n": [1, 2]})
    details = await wait_for(instance, "complete")
    assert details.output["payload"] == {"n": [1, 2]}
    assert details.output["id"] == "order-7" and details.output["workflow"] == "orders"
    assert details.created_at is not None
    assert details.output["ts"] == details.created_at.isoformat()


async def test_waits_awaited_together_are_all_recorded_and_either_event_wakes(
    engine: af.Engine, db_path: Path,
) -> None:
    async def run(event: af.Event, step: af.Step) -> list[Any]:
        a, b = await step.all(step.wait_for_event("a", type="alpha"),
                              step.wait_for_event("b", type="beta"))
        return [a.payload, b.payload]

    instance = await engine.register("wf", run).create()
    await wait_for(instance, "waiting")
    await asyncio.sleep(0.05)
    started = [e.step async for e in instance.events(follow=False) if e.type == "wait.started"]
    assert sorted(started) == ["a", "b"]  # both journaled by the first hibernation
    await instance.send_event("beta", 2)  # the second branch's event wakes the instance
    await asyncio.sleep(0.1)
    assert rows(db_path, "SELECT runs FROM instances")[0][0] == 2
    assert rows(db_path, "SELECT state FROM steps WHERE name = 'b'")[0][0] == "completed"
    await instance.send_event("alpha", 1)
    assert (await wait_for(instance, "complete")).output == [1, 2]


@pytest.mark.parametrize("beside_a_gate", [False, True], ids=["two-waits", "beside-a-gate"])
async def test_two_waits_for_one_type_take_different_events(
    engine: af.Engine, clock: af.FakeClock, beside_a_gate: bool,
) -> None:
    # One buffered event, two waits for its type awaited together: one takes it, the other
    # hibernates (before, both took it, the second write failed as if the lease were lost,
    # and the instance sat 'running' until its lease expired).
    async def run(event: af.Event, step: af.Step) -> list[Any]:
        await step.sleep("nap", 10)  # the first event is sent while it sleeps
        waits = [step.wait_for_event("c", type="ack"), step.wait_for_event("b", type="ack")]
        if beside_a_gate:
            waits.insert(1, step.wait_for_approval("a", prompt="go?"))
        results = await step.all(*waits)
        return [getattr(r, "payload", getattr(r, "approved", None)) for r in results]

    instance = await engine.register("wf", run).create(id="x")
    await wait_for(instance, "waiting")
    await instance.send_event("ack", 1)
    await clock.advance(10)
    await asyncio.sleep(0.2)
    assert (await instance.status()).status == "waiting"
    taken = [s.name for s in await instance.steps() if s.state == "completed"]
    assert taken == ["nap", "c"]
    if beside_a_gate:
        assert [r.gate for r in await instance.approvals()] == ["a"]
        await instance.approve("a")
    await instance.send_event("ack", 2)
    expected = [1, True, 2] if beside_a_gate else [1, 2]
    assert (await wait_for(instance, "complete")).output == expected


async def test_an_event_racing_the_end_is_refused_and_writes_nothing(
    engine: af.Engine, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The instance is terminated after send_event saw it waiting and before the event is
    written: the write sees it and refuses; nothing follows the end in its history."""

    async def run(event: af.Event, step: af.Step) -> Any:
        return (await step.wait_for_event("go", type="go")).payload

    instance = await engine.register("race", run).create()
    await wait_for(instance, "waiting")
    terminated_first(monkeypatch, engine, "deliver_event", instance)
    with pytest.raises(af.InvalidStateError, match="terminated and takes no more events"):
        await instance.send_event("go", {"late": True})
    types = [e.type async for e in instance.events(follow=False)]
    assert types[-1] == "instance.terminated"
    assert "event.received" not in types

