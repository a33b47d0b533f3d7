"""Status, pause, resume, terminate, restart, concurrency slots and the events feed."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import agentflow as af
from tests.conftest import counter, drive, rows, wait_for


def test_the_nine_status_strings() -> None:
    assert sorted(s.value for s in af.InstanceStatus) == sorted([
        "queued", "running", "paused", "errored", "terminated", "complete", "waiting",
        "waiting_for_pause", "unknown",
    ])
    assert af.InstanceStatus.COMPLETE == "complete"


async def test_pause_a_running_instance_waits_for_the_current_step(engine: af.Engine) -> None:
    release = asyncio.Event()
    calls, hit = counter()

    async def slow() -> str:
        await release.wait()
        return "slow done"

    async def run(event: af.Event, step: af.Step) -> list[str]:
        first = await step.do("slow", slow)
        second = await step.do("next", lambda: hit("next") or "next done")
        return [first, second]

    instance = await engine.register("wf", run).create()
    await wait_for(instance, "running")
    await asyncio.sleep(0.02)
    await instance.pause()
    assert (await instance.status()).status == "waiting_for_pause"
    release.set()
    await wait_for(instance, "paused")
    assert calls == {}  # paused at the step boundary: 'next' did not start
    await instance.resume()
    details = await wait_for(instance, "complete")
    assert details.output == ["slow done", "next done"]
    assert calls == {"next": 1}


async def test_pause_while_sleeping_is_immediate_and_resume_keeps_the_remaining_time(
    engine: af.Engine, clock: af.FakeClock
) -> None:
    async def run(event: af.Event, step: af.Step) -> float:
        await step.sleep("nap", "10 hours")
        return await step.do("woke at", lambda: clock.now())

    start = clock.now()
    instance = await engine.register("wf", run).create()
    await wait_for(instance, "waiting")
    await clock.advance(4 * 3600)
    await instance.pause()
    assert (await instance.status()).status == "paused"
    await clock.advance(100 * 3600)  # paused time does not count
    await asyncio.sleep(0.05)
    assert (await instance.status()).status == "paused"
    await instance.resume()
    details = await drive(engine, clock, instance)
    assert details.output == pytest.approx(start + 110 * 3600)


async def test_pause_and_resume_while_waiting_for_an_event(engine: af.Engine) -> None:
    async def run(event: af.Event, step: af.Step) -> Any:
        return (await step.wait_for_event("w", type="go")).payload

    instance = await engine.register("wf", run).create()
    await wait_for(instance, "waiting")
    await instance.pause()
    await instance.send_event("go", "buffered while paused")
    await asyncio.sleep(0.05)
    assert (await instance.status()).status == "paused"
    await instance.resume()
    assert (await wait_for(instance, "complete")).output == "buffered while paused"


async def test_pause_a_queued_instance(engine: af.Engine) -> None:
    gate = asyncio.Event()

    async def run(event: af.Event, step: af.Step) -> str:
        await step.do("hold", gate.wait)
        return "ok"

    binding = engine.register("wf", run, concurrency=1)
    first = await binding.create()
    second = await binding.create()
    await wait_for(first, "running")
    assert (await second.status()).status == "queued"
    await second.pause()
    gate.set()
    await wait_for(first, "complete")
    await asyncio.sleep(0.05)
    assert (await second.status()).status == "paused"
    await second.resume()
    assert (await wait_for(second, "complete")).output == "ok"


async def test_terminate_stops_a_running_instance_and_finished_ones_refuse(
    engine: af.Engine,
) -> None:
    cancelled = asyncio.Event()

    async def forever() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async def run(event: af.Event, step: af.Step) -> None:
        await step.do("forever", forever)

    instance = await engine.register("wf", run).create()
    await wait_for(instance, "running")
    await asyncio.sleep(0.02)
    await instance.terminate()
    assert (await instance.status()).status == "terminated"
    await asyncio.wait_for(cancelled.wait(), 2)
    with pytest.raises(af.InvalidStateError, match="terminated"):
        await instance.terminate()
    with pytest.raises(af.InvalidStateError):
        await instance.pause()


async def test_terminate_a_waiting_instance(engine: af.Engine, db_path: Path) -> None:
    async def run(event: af.Event, step: af.Step) -> None:
        await step.wait_for_event("w", type="go")

    instance = await engine.register("wf", run).create()
    await wait_for(instance, "waiting")
    await instance.terminate()
    details = await instance.status()
    assert details.status == "terminated" and details.output is None
    with pytest.raises(af.InvalidStateError):
        await instance.send_event("go")
    assert rows(db_path, "SELECT count(*) FROM inbox")[0][0] == 0


async def test_restart_from_scratch_runs_every_step_again(
    engine: af.Engine, clock: af.FakeClock
) -> None:
    calls, hit = counter()

    async def run(event: af.Event, step: af.Step) -> int:
        await step.do("a", lambda: hit("a"))
        ev = await step.wait_for_event("w", type="go")
        await step.do("b", lambda: hit("b"))
        return int(ev.payload)

    instance = await engine.register("wf", run).create()
    await wait_for(instance, "waiting")
    await instance.send_event("go", 1)
    await wait_for(instance, "complete")
    await instance.restart()
    await wait_for(instance, "waiting", "complete")
    details = await wait_for(instance, "complete")
    # The event consumed by the discarded wait is delivered again.
    assert details.output == 1
    assert calls == {"a": 2, "b": 2}


async def test_restart_from_a_step_keeps_the_steps_before_it(engine: af.Engine) -> None:
    calls, hit = counter()

    async def run(event: af.Event, step: af.Step) -> str:
        await step.do("one", lambda: hit("one"))
        await step.do("two", lambda: hit("two"))
        n = await step.do("three", lambda: hit("three") or calls["three"])
        if n == 1:
            raise RuntimeError("first try fails")
        return f"three ran {n} times"

    instance = await engine.register("wf", run).create()
    assert (await wait_for(instance, "errored")).error == af.ErrorInfo(
        "RuntimeError", "first try fails"
    )
    await instance.restart(from_step="two")
    details = await wait_for(instance, "complete")
    assert details.output == "three ran 2 times"
    assert calls == {"one": 1, "two": 2, "three": 2}
    assert details.error is None


async def test_concurrency_limit_queues_and_never_exceeds(engine: af.Engine) -> None:
    running = 0
    peak = 0

    async def work() -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.01)
        running -= 1

    async def run(event: af.Event, step: af.Step) -> int:
        await step.do("work", work)
        return int(event.payload)

    binding = engine.register("wf", run, concurrency=3)
    instances = await binding.create_batch([{"params": n} for n in range(12)])
    outputs = [(await wait_for(i, "complete")).output for i in instances]
    assert outputs == list(range(12))
    assert peak == 3


async def test_two_engines_creating_at_once_share_the_limit(db_url: str) -> None:
    # New instances may start in the create itself when slots are free: two engines on one
    # database, both creating, must still never run more than the limit between them.
    running = 0
    peak = 0
    gate = asyncio.Event()

    async def work() -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await gate.wait()
        await asyncio.sleep(0.002)
        running -= 1

    async def run(event: af.Event, step: af.Step) -> int:
        await step.do("work", work)
        return int(event.payload)

    async with af.Engine.open(db_url, poll_interval=0.05) as one, \
            af.Engine.open(db_url, poll_interval=0.05) as two:
        first, second = (e.register("wf", run, concurrency=3) for e in (one, two))
        instances = await first.create_batch([{"params": n} for n in range(3)])
        instances += await second.create_batch([{"params": n} for n in range(3, 6)])
        instances.append(await second.create(params=6))
        await asyncio.sleep(0.1)
        assert peak == 3  # the second engine's instances wait for slots
        gate.set()
        more = await asyncio.gather(
            *(b.create_batch([{"params": n}, {"params": n + 1}]) for b, n in
              ((first, 7), (second, 9), (first, 11), (second, 13))))
        instances += [i for group in more for i in group]
        outputs = [(await wait_for(i, "complete", timeout=20)).output for i in instances]
    assert sorted(outputs) == list(range(15))
    assert peak == 3


async def test_sleeping_instances_hold_no_slot(engine: af.Engine, clock: af.FakeClock) -> None:
    async def run(event: af.Event, step: af.Step) -> str:
        if event.payload == "sleeper":
            await step.sleep("nap", "1 day")
        return str(event.payload)

    binding = engine.register("wf", run, concurrency=1)
    sleeper = await binding.create(params="sleeper")
    await wait_for(sleeper, "waiting")
    others = [await binding.create(params=f"o{n}") for n in range(3)]
    for other in others:
        await wait_for(other, "complete")
    await clock.advance(86400)
    assert (await wait_for(sleeper, "complete")).output == "sleeper"


async def test_woken_instances_go_before_new_ones(engine: af.Engine, clock: af.FakeClock) -> None:
    order: list[str] = []
    gate = asyncio.Event()

    async def run(event: af.Event, step: af.Step) -> None:
        name = str(event.payload)
        if name == "blocker":
            await step.do("hold", gate.wait)
            return
        if name.startswith("sleeper"):
            await step.sleep("nap", 60)
        await step.do("record", lambda: order.append(name))

    binding = engine.register("wf", run, concurrency=1)
    sleeper = await binding.create(params="sleeper")
    await wait_for(sleeper, "waiting")
    blocker = await binding.create(params="blocker")
    await wait_for(blocker, "running")
    newcomers = [await binding.create(params=f"new {n}") for n in range(3)]
    await clock.advance(60)  # the sleeper is due while the slot is taken
    await asyncio.sleep(0.05)
    gate.set()
    for instance in [sleeper, *newcomers]:
        await wait_for(instance, "complete")
    assert order == ["sleeper", "new 0", "new 1", "new 2"]


async def test_events_feed_has_history_then_live_events_until_finished(
    engine: af.Engine,
) -> None:
    async def run(event: af.Event, step: af.Step) -> str:
        await step.do("flaky", _fails_once, retries=af.Retries(limit=1, delay=0))
        ev = await step.wait_for_event("approval", type="approve")
        return str(ev.payload)

    instance = await engine.register("wf", run).create(id="feed")
    await wait_for(instance, "waiting")
    seen: list[af.InstanceEvent] = []

    async def follow() -> None:
        async for event in instance.events():
            seen.append(event)

    follower = asyncio.create_task(follow())
    await asyncio.sleep(0.05)
    await instance.send_event("approve", "yes")
    await asyncio.wait_for(follower, 5)  # ends by itself once the instance completes
    types = [e.type for e in seen]
    assert types == [
        "instance.queued", "instance.started", "step.started", "attempt.started",
        "attempt.failed", "attempt.started", "step.completed", "wait.started",
        "instance.waiting", "event.received", "instance.started", "wait.completed",
        "instance.completed",
    ]
    failed = seen[types.index("attempt.failed")]
    assert failed.step == "flaky" and failed.data["retry_in"] == 0
    assert failed.data["error"] == {"name": "ValueError", "message": "first attempt fails"}
    assert [e.seq for e in seen] == sorted(e.seq for e in seen)
    assert {e.instance_id for e in seen} == {"feed"}


def _fails_once(ctx: af.StepContext) -> str:
    if ctx.attempt == 1:
        raise ValueError("first attempt fails")
    return "ok"


async def test_binding_get_and_engine_get(engine: af.Engine) -> None:
    async def run(event: af.Event, step: af.Step) -> None:
        return None

    binding = engine.register("wf", run)
    created = await binding.create(id="known")
    assert (await binding.get("known")).id == created.id
    assert (await engine.get("known")).workflow_name == "wf"
    listed = await engine.list_instances(workflow="wf")
    assert [d.id for d in listed] == ["known"]


async def test_engine_get_finds_an_id_in_any_of_several_workflows(engine: af.Engine) -> None:
    async def run(event: af.Event, step: af.Step) -> None:
        return None

    for name in ("alpha", "beta", "gamma", "delta"):
        await engine.register(name, run).create_batch(
            [{"id": f"{name}-{n}"} for n in range(50)])
    await engine.binding("gamma").create(id="alpha-7")  # the same id in a second workflow
    assert (await engine.get("beta-3")).workflow_name == "beta"
    assert (await engine.get("delta-49")).workflow_name == "delta"
    with pytest.raises(af.InvalidArgumentError, match="several workflows"):
        await engine.get("alpha-7")
    assert (await engine.get("alpha-7", workflow="gamma")).workflow_name == "gamma"
    with pytest.raises(af.InstanceNotFoundError):
        await engine.get("epsilon-1")


async def test_generated_ids_are_unique_hex_in_creation_order(engine: af.Engine) -> None:
    async def run(event: af.Event, step: af.Step) -> None:
        return None

    binding = engine.register("ids", run)
    first = await binding.create_batch([{} for _ in range(2000)])
    await asyncio.sleep(0.003)  # the next millisecond at least
    second = [await binding.create() for _ in range(3)]
    ids = [i.id for i in first] + [i.id for i in second]
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 32 and set(i) <= set("0123456789abcdef") for i in ids)
    # Time first: a later creation sorts after an earlier one (the store's id indexes grow at
    # their end), and within one millisecond the random part keeps them apart.
    assert max(i.id for i in first) < min(i.id for i in second)
    assert (await binding.get(second[0].id)).id == second[0].id


async def test_wait_returns_a_finished_instance_at_once_and_refuses_bad_timeouts(
    engine: af.Engine,
) -> None:
    async def run(event: af.Event, step: af.Step) -> int:
        return 7

    instance = await engine.register("quick", run).create()
    assert (await instance.wait(timeout=10)).output == 7
    assert (await instance.wait(timeout=0)).output == 7  # done: no timer needed
    assert (await instance.wait(timeout=10**400)).output == 7  # forever, not an overflow
    for bad in (-1, float("nan"), "10", True):
        with pytest.raises(af.InvalidArgumentError, match="wait timeout"):
            await instance.wait(timeout=bad)  # type: ignore[arg-type]

    async def held(event: af.Event, step: af.Step) -> None:
        await step.wait_for_event("never", type="never", timeout="1 hour")

    blocked = await engine.register("held", held).create()
    started = time.monotonic()
    with pytest.raises(TimeoutError):  # (many polls of 0.05 s before it gives up)
        await blocked.wait(timeout=0.3)
    assert 0.3 <= time.monotonic() - started < 1.0
    assert (await blocked.status()).status == "waiting"


def test_an_engine_serves_successive_event_loops(db_url: str, db_path: Path) -> None:
    # A script or a sync web view: the engine opened in one asyncio.run, used in the next.
    async def open_store() -> af.Engine:
        return await af.Engine.open(db_url, worker=False)

    engine = asyncio.run(open_store())

    async def create(id: str) -> str:
        instance = await engine.binding("wf").create(id=id)
        await instance.send_event("go", {"n": 1})
        return (await instance.status()).status

    for id in ("a", "b"):
        assert asyncio.run(asyncio.wait_for(create(id), 5)) == "queued"
    asyncio.run(asyncio.wait_for(engine.close(), 5))
    assert rows(db_path, "SELECT id FROM instances ORDER BY iid") == [("a",), ("b",)]


def test_an_engine_serves_the_loop_of_another_thread_while_the_first_still_runs(
    db_url: str, db_path: Path,
) -> None:
    # A threaded sync web app: each request runs asyncio.run on its own thread, one after
    # the other, while an earlier request's loop has not finished yet.
    async def open_store() -> af.Engine:
        return await af.Engine.open(db_url, worker=False)

    engine = asyncio.run(open_store())
    created, release = threading.Event(), threading.Event()

    async def first_request() -> None:
        await engine.binding("wf").create(id="a")
        created.set()
        while not release.is_set():  # this loop is still running
            await asyncio.sleep(0.01)

    thread = threading.Thread(target=asyncio.run, args=(first_request(),))
    thread.start()
    try:
        assert created.wait(5)

        async def second_request() -> str:
            return (await (await engine.binding("wf").create(id="b")).status()).status

        assert asyncio.run(asyncio.wait_for(second_request(), 5)) == "queued"
    finally:
        release.set()
        thread.join()
    asyncio.run(engine.close())
    assert rows(db_path, "SELECT id FROM instances ORDER BY iid") == [("a",), ("b",)]
