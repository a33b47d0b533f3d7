"""Waiting on instances, ``wait()`` and ``events(follow=True)``: waiters and followers wake
when their own instance changes (not on every commit of a busy engine), find changes made
elsewhere within about the poll interval, and waits end on time."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import agentflow as af
from tests.conftest import wait_for

ON_POSTGRES = os.environ.get("AGENTFLOW_TEST_BACKEND") == "postgres"


def _count_reads(engine: af.Engine) -> list[int]:
    """Count the engine's reads of single instance rows (what each waiter does on waking)."""
    reads = [0]
    read = engine._storage.get_instance_by_iid

    async def counted(iid: int) -> Any:
        reads[0] += 1
        return await read(iid)

    engine._storage.get_instance_by_iid = counted  # type: ignore[method-assign]
    return reads


async def test_waiters_wake_when_their_instance_finishes_not_on_every_commit(
    db_url: str,
) -> None:
    # A poll interval far longer than the test: every wake-up below comes from this engine.
    async with af.Engine.open(db_url, poll_interval=60) as engine:
        reads = _count_reads(engine)

        async def run(event: af.Event, step: af.Step) -> int:
            total = 0
            for n in range(event.payload["steps"]):
                total += await step.do("add", lambda n=n: n)
            return total

        binding = engine.register("many", run, concurrency=100)
        # Finishing at different commits: 5 to 24 steps each.
        instances = await binding.create_batch(
            [{"params": {"steps": 5 + k % 20}} for k in range(100)])
        done = await asyncio.wait_for(
            asyncio.gather(*(i.wait() for i in instances)), timeout=30
        )
        assert [d.output for d in done] == [sum(range(5 + k % 20)) for k in range(100)]
        # A read when each wait starts and one when its run ends, not one per waiter for
        # each of the ~25 commits that journaled everyone's steps.
        assert reads[0] <= 3 * len(instances), reads[0]


@pytest.mark.skipif(ON_POSTGRES, reason="SQLite tells whether another connection wrote")
async def test_quiet_polls_wake_nobody_and_a_write_elsewhere_wakes_everyone(
    db_url: str, db_path: Path,
) -> None:
    async with af.Engine.open(db_url, poll_interval=0.02) as engine:
        reads = _count_reads(engine)

        async def held(event: af.Event, step: af.Step) -> None:
            await step.wait_for_event("go", type="go", timeout="1 hour")

        binding = engine.register("held", held)
        instances = [await binding.create() for _ in range(20)]
        for instance in instances:
            await wait_for(instance, "waiting")
        before = reads[0]
        waiting = [asyncio.create_task(i.wait()) for i in instances]
        await asyncio.sleep(0.4)  # twenty polls, nobody else writing
        first = reads[0]
        assert first - before == len(instances), first - before  # the first look only
        other = sqlite3.connect(db_path)  # another process finishes one of them
        other.execute("UPDATE instances SET status = 'terminated' WHERE id = ?",
                      (instances[0].id,))
        other.commit()
        other.close()
        assert (await asyncio.wait_for(waiting[0], 2)).status == "terminated"
        assert reads[0] >= first + len(instances)  # the next poll woke every waiter
        for task in waiting[1:]:
            assert not task.done()
            task.cancel()
        await asyncio.gather(*waiting[1:], return_exceptions=True)
        assert not engine._statuses._waiting and not engine._statuses._far


async def test_terminate_and_close_wake_a_waiter_without_polling(db_url: str) -> None:
    async with af.Engine.open(db_url, poll_interval=60) as engine:
        release = asyncio.Event()

        async def run(event: af.Event, step: af.Step) -> None:
            await step.do("block", release.wait)

        binding = engine.register("held", run)
        first, second = await binding.create(), await binding.create()
        await wait_for(first, "running")
        started = time.monotonic()
        with pytest.raises(TimeoutError, match=r"did not finish within 0\.1 seconds"):
            await first.wait(timeout=0.1)  # (shorter than the poll: a timer of its own)
        assert 0.1 <= time.monotonic() - started < 0.6
        waiting = asyncio.create_task(first.wait(timeout=30))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        await first.terminate()
        assert (await asyncio.wait_for(waiting, timeout=5)).status == "terminated"

        waiting = asyncio.create_task(second.wait(timeout=30))
        await asyncio.sleep(0.05)
    with pytest.raises(af.EngineClosedError):
        await asyncio.wait_for(waiting, timeout=5)


async def test_changes_made_by_another_engine_reach_waiters_and_followers_within_a_poll(
    db_url: str,
) -> None:
    # No notify crosses engines (or processes): the watcher's polls find the changes.
    release = asyncio.Event()

    async def run(event: af.Event, step: af.Step) -> str:
        await step.do("block", release.wait)
        return "done"

    async with af.Engine.open(db_url, poll_interval=0.05) as runner, \
            af.Engine.open(db_url, worker=False, poll_interval=0.1) as watcher:
        created = await runner.register("far", run).create()
        await wait_for(created, "running")
        instance = await watcher.binding("far").get(created.id)
        pending = asyncio.create_task(instance.wait(timeout=10))
        seen: list[str] = []
        following = asyncio.create_task(_follow(instance, seen))
        await asyncio.sleep(0.3)  # several polls with nothing new
        assert not pending.done() and not following.done()
        assert "step.completed" not in seen
        release.set()
        await created.wait(timeout=5)
        finished = time.monotonic()
        details = await asyncio.wait_for(pending, timeout=5)
        await asyncio.wait_for(following, 5)
        assert time.monotonic() - finished < 0.5  # a poll or two of 0.1 s, not the timeout
        assert (details.status, details.output) == ("complete", "done")
        assert seen[-2:] == ["step.completed", "instance.completed"]


def test_waiters_on_the_loops_of_other_threads_wake_on_their_own_loop(db_url: str) -> None:
    # A threaded web app: request threads wait (each with asyncio.run) on instances that the
    # engine's own loop runs; one request's loop ends while another still waits.
    started, release = threading.Event(), threading.Event()
    engine_loop = asyncio.new_event_loop()

    async def run(event: af.Event, step: af.Step) -> str:
        await step.do("block", lambda: _until(release))
        return event.payload

    async def open_engine() -> tuple[af.Engine, list[af.Instance]]:
        engine = await af.Engine.open(db_url, poll_interval=60)
        binding = engine.register("threads", run)
        made = [await binding.create(params=name) for name in ("slow", "quick")]
        for instance in made:
            await wait_for(instance, "running")
        return engine, made

    engine, (slow, quick) = engine_loop.run_until_complete(open_engine())
    serving = threading.Thread(target=engine_loop.run_forever)
    serving.start()
    results: dict[str, Any] = {}

    def request(name: str, instance: af.Instance, timeout: float) -> None:
        async def call() -> None:
            started.set()
            try:
                results[name] = (await instance.wait(timeout=timeout)).output
            except TimeoutError:
                results[name] = "timed out"

        asyncio.run(call())

    try:
        waiting = threading.Thread(target=request, args=("slow", slow, 20))
        waiting.start()
        assert started.wait(5)
        # A short request on a loop of its own, gone before the instances finish.
        brief = threading.Thread(target=request, args=("brief", quick, 0.2))
        brief.start()
        brief.join(5)
        assert results == {"brief": "timed out"}
        time.sleep(0.1)
        begun = time.monotonic()
        release.set()
        waiting.join(5)
        assert results["slow"] == "slow"
        assert time.monotonic() - begun < 2  # woken by the run's end, not by a poll of 60 s
    finally:
        release.set()
        asyncio.run_coroutine_threadsafe(engine.close(), engine_loop).result(10)
        engine_loop.call_soon_threadsafe(engine_loop.stop)
        serving.join(10)
        engine_loop.close()


async def _until(flag: threading.Event) -> None:
    while not flag.is_set():
        await asyncio.sleep(0.01)


def _count_feed_reads(engine: af.Engine) -> list[int]:
    reads = [0]
    read = engine._storage.read_history

    async def counted(*args: Any, **kwargs: Any) -> Any:
        reads[0] += 1
        return await read(*args, **kwargs)

    engine._storage.read_history = counted  # type: ignore[method-assign]
    return reads


async def _follow(instance: af.Instance, into: list[str]) -> None:
    async for event in instance.events(follow=True):
        into.append(event.type)


async def test_followers_wake_for_their_own_instance_not_on_every_commit(db_url: str) -> None:
    async with af.Engine.open(db_url, poll_interval=60) as engine:
        reads = _count_feed_reads(engine)

        async def held(event: af.Event, step: af.Step) -> str:
            got = await step.wait_for_event("go", type="go", timeout="1 hour")
            return str(got.payload)

        async def busy(event: af.Event, step: af.Step) -> int:
            for n in range(20):
                await step.do("add", lambda n=n: n)
            return 0

        holding = engine.register("held", held)
        followed = [await holding.create() for _ in range(10)]
        for instance in followed:
            await wait_for(instance, "waiting")
        seen: list[list[str]] = [[] for _ in followed]
        following = [asyncio.create_task(_follow(instance, into))
                     for instance, into in zip(followed, seen, strict=True)]
        await asyncio.sleep(0.05)
        before = reads[0]
        others = await engine.register("busy", busy, concurrency=100).create_batch(
            [{} for _ in range(100)])
        await asyncio.wait_for(asyncio.gather(*(i.wait() for i in others)), 30)
        # ~25 commits journaled the others' steps; none of them is in a followed feed.
        assert reads[0] - before <= 2 * len(followed), reads[0] - before

        await followed[0].send_event("go", "now")  # a followed instance goes on: seen at once
        await asyncio.wait_for(following[0], 5)
        assert seen[0][-1] == "instance.completed"
        for task in following[1:]:
            assert not task.done()
            task.cancel()
        await asyncio.gather(*following[1:], return_exceptions=True)
        assert not engine._feeds._waiting


async def test_a_follower_ends_when_an_event_races_the_end(db_url: str) -> None:
    # terminate() and send_event() together: the event is refused in the write (nothing is
    # written after 'instance.terminated'), and the follower ends at the terminal entry.
    async with af.Engine.open(db_url, poll_interval=60) as engine:
        async def held(event: af.Event, step: af.Step) -> None:
            await step.wait_for_event("go", type="go", timeout="1 hour")

        instance = await engine.register("held", held).create()
        await wait_for(instance, "waiting")
        _, sent = await asyncio.gather(instance.terminate(), instance.send_event("other", 1),
                                       return_exceptions=True)
        assert isinstance(sent, af.InvalidStateError)
        seen: list[str] = []
        await asyncio.wait_for(_follow(instance, seen), 5)
        assert seen[-1] == "instance.terminated"
        assert "event.received" not in seen
