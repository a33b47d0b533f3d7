"""Durability: what a run did survives the engine closing, and a worker process killed with
SIGKILL at any moment loses no step and journals none twice."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import agentflow as af
from tests.conftest import drive, rows, wait_for
from tests.engine import _crash_worker as crash

ROOT = Path(__file__).resolve().parents[2]

# Step bodies count their calls here; reset before every test.
CALLS: dict[str, int] = {}
# Events step bodies block on; made by the test that needs them, on its own loop.
GATES: dict[str, asyncio.Event] = {}


@pytest.fixture(autouse=True)
def _reset_calls() -> None:
    CALLS.clear()
    GATES.clear()


def hit(name: str) -> int:
    CALLS[name] = CALLS.get(name, 0) + 1
    return CALLS[name]


async def until(
    check: Callable[[], bool], timeout: float = 5.0, what: str | Callable[[], str] = "",
) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            about = what() if callable(what) else what
            raise AssertionError(f"timed out after {timeout} s waiting for {about}")
        await asyncio.sleep(0.005)


def journal(db_path: Path) -> list[tuple[object, ...]]:
    return rows(
        db_path,
        "SELECT i.id, s.name, s.count, s.state FROM steps s JOIN instances i ON i.iid = s.iid "
        "ORDER BY s.seq",
    )


# -- replay after close and reopen -----------------------------------------------------------
async def blocking_b() -> str:
    n = hit("b")
    await GATES["b"].wait()
    return f"b{n}"


async def three_steps(event: af.Event, step: af.Step) -> dict[str, str]:
    a = await step.do("a", lambda: f"a{hit('a')}")
    b = await step.do("b", blocking_b)
    c = await step.do("c", lambda: f"c{hit('c')}")
    return {"a": a, "b": b, "c": c}


async def test_reopened_engine_replays_finished_steps_and_reruns_the_unfinished_one(
    db_url: str, db_path: Path,
) -> None:
    GATES["b"] = asyncio.Event()
    engine = await af.Engine.open(db_url, clock=af.FakeClock(), poll_interval=0.05)
    try:
        instance = await engine.register("replay", three_steps).create(id="r1")
        await until(lambda: CALLS.get("b") == 1, what="step b to start")
        assert (await instance.status()).status == "running"
    finally:
        await engine.close()  # b never finishes in this engine
    assert CALLS == {"a": 1, "b": 1}
    assert journal(db_path) == [("r1", "a", 1, "completed")]
    assert rows(db_path, "SELECT status, owner FROM instances") == [("queued", None)]

    GATES["b"].set()
    async with af.Engine.open(db_url, clock=af.FakeClock(), poll_interval=0.05) as engine:
        instance = await engine.register("replay", three_steps).get("r1")
        details = await wait_for(instance, "complete", "errored", "terminated")
    assert details.status == "complete", details.error
    # 'a1': a's result is the journaled one, from before the close
    assert details.output == {"a": "a1", "b": "b2", "c": "c1"}
    assert CALLS == {"a": 1, "b": 2, "c": 1}
    assert journal(db_path) == [
        ("r1", "a", 1, "completed"), ("r1", "b", 1, "completed"), ("r1", "c", 1, "completed"),
    ]


async def napper(event: af.Event, step: af.Step) -> list[int]:
    before = await step.do("before", lambda: hit("before"))
    await step.sleep("nap", "1 hour")
    after = await step.do("after", lambda: hit("after"))
    return [before, after]


async def sleep_then_close(db_url: str, clock: af.FakeClock) -> None:
    async with af.Engine.open(db_url, clock=clock, poll_interval=0.05) as engine:
        instance = await engine.register("nap", napper).create(id="n1")
        await wait_for(instance, "waiting")
    assert CALLS == {"before": 1}


async def test_a_sleeping_instance_survives_close_and_reopen(db_url: str) -> None:
    first = af.FakeClock()
    await sleep_then_close(db_url, first)
    wake = first.now() + 3600
    # a new engine, as in a new process: only the file carries the sleep over
    clock = af.FakeClock(start=first.now() + 60)
    async with af.Engine.open(db_url, clock=clock, poll_interval=0.05) as engine:
        instance = await engine.register("nap", napper).get("n1")
        await clock.set(wake - 1)
        await asyncio.sleep(0.2)  # several polls of the worker
        assert (await instance.status()).status == "waiting"
        assert CALLS == {"before": 1}
        details = await drive(engine, clock, instance)
    assert details.status == "complete", details.error
    assert details.output == [1, 1]
    assert CALLS == {"before": 1, "after": 1}
    assert clock.now() == wake


async def test_a_sleep_that_ended_while_closed_wakes_on_open(db_url: str) -> None:
    first = af.FakeClock()
    await sleep_then_close(db_url, first)
    clock = af.FakeClock(start=first.now() + 7200)
    async with af.Engine.open(db_url, clock=clock, poll_interval=0.05) as engine:
        instance = await engine.register("nap", napper).get("n1")
        details = await wait_for(instance, "complete", "errored", "terminated")
    assert (details.status, details.output) == ("complete", [1, 1])
    assert CALLS == {"before": 1, "after": 1}


async def approver(event: af.Event, step: af.Step) -> dict[str, Any]:
    approval = await step.wait_for_event("approval", type="approve", timeout="1 day")
    return await step.do("after", lambda: {"by": approval.payload["by"], "n": hit("after")})


async def test_a_waiting_instance_gets_an_event_sent_while_no_worker_ran(
    db_url: str, clock: af.FakeClock,
) -> None:
    async with af.Engine.open(db_url, clock=clock, poll_interval=0.05) as engine:
        instance = await engine.register("approve", approver).create(id="w1")
        await wait_for(instance, "waiting")
    async with af.Engine.open(db_url, clock=clock, worker=False) as engine:
        instance = await engine.register("approve", approver).get("w1")
        await instance.send_event("approve", {"by": "ada"})
        assert (await instance.status()).status == "queued"
    async with af.Engine.open(db_url, clock=clock, poll_interval=0.05) as engine:
        instance = await engine.register("approve", approver).get("w1")
        details = await wait_for(instance, "complete", "errored", "terminated")
    assert (details.status, details.output) == ("complete", {"by": "ada", "n": 1})


# -- crash: SIGKILL a worker process at random moments ---------------------------------------
INSTANCES = 20


def count_lines(path: Path) -> int:
    try:
        with path.open() as f:
            return sum(1 for _ in f)
    except FileNotFoundError:
        return 0


def scalar(db_path: Path, sql: str) -> int:
    ((value,),) = rows(db_path, sql)
    assert isinstance(value, int), value
    return value


def complete_count(db_path: Path) -> int:
    return scalar(db_path, "SELECT count(*) FROM instances WHERE status = 'complete'")


@pytest.mark.timeout(60)
async def test_sigkilled_workers_lose_no_step_and_journal_none_twice(
    tmp_path: Path, db_path: Path, db_url: str,
) -> None:
    seed = int.from_bytes(os.urandom(4), "big")
    rng = random.Random(seed)
    log, stop = tmp_path / "steps.log", tmp_path / "stop"
    expected_ids = [f"c{n:02d}" for n in range(INSTANCES)]
    async with af.Engine.open(db_url, worker=False) as engine:
        binding = engine.register(crash.WORKFLOW, crash.run)
        await binding.create_batch(
            [{"id": id, "params": {"n": n}} for n, id in enumerate(expected_ids)]
        )

    errs: list[Path] = []

    def spawn() -> subprocess.Popen[bytes]:
        err = tmp_path / f"worker{len(errs)}.err"
        errs.append(err)
        with err.open("wb") as stderr:
            return subprocess.Popen(
                [sys.executable, "-m", "tests.engine._crash_worker", str(db_path), str(log),
                 str(stop)],
                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=stderr,
            )

    def context() -> str:
        tails = [f"--- {e.name}\n{e.read_text()[-2000:]}" for e in errs if e.stat().st_size]
        return f"seed {seed}; complete {complete_count(db_path)}/{INSTANCES}\n" + "\n".join(tails)

    kills = rng.randint(3, 5)
    interrupted = 0
    proc = spawn()
    try:
        for _ in range(kills):
            # let the worker start and make some progress, then kill it at a random moment
            progress = count_lines(log) + rng.randint(1, 15)

            def progressed(target: int = progress) -> bool:
                return count_lines(log) >= target or complete_count(db_path) == INSTANCES

            await until(progressed, timeout=15, what=lambda: f"worker progress ({context()})")
            await asyncio.sleep(rng.uniform(0, 0.05))
            proc.send_signal(signal.SIGKILL)
            assert proc.wait(timeout=10) == -signal.SIGKILL
            if complete_count(db_path) < INSTANCES:
                interrupted += 1
            proc = spawn()
        await until(
            lambda: complete_count(db_path) == INSTANCES, timeout=30,
            what=lambda: f"every instance to complete ({context()})",
        )
        stop.touch()
        assert proc.wait(timeout=10) == 0, context()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)

    assert interrupted >= 3, f"the kills came after the work was done; {context()}"

    instances = rows(db_path, "SELECT id, status, output, owner FROM instances ORDER BY id")
    assert [r[0] for r in instances] == expected_ids
    for (id, status, output, owner), n in zip(instances, range(INSTANCES), strict=True):
        assert (status, owner) == ("complete", None), context()
        assert json.loads(str(output)) == {
            "instance": id, "results": [crash.step_result(n, i) for i in range(crash.STEPS)],
        }

    step_names = [f"s{i}" for i in range(crash.STEPS)]
    records = journal(db_path)
    per_step = Counter((id, name) for id, name, _, _ in records)
    assert set(per_step) == {(id, name) for id in expected_ids for name in step_names}
    assert set(per_step.values()) == {1}, "a step was journaled twice"
    assert {(count, state) for _, _, count, state in records} == {(1, "completed")}

    ran = Counter(log.read_text().split())
    assert set(ran) == {f"{id}:{name}" for id in expected_ids for name in step_names}
    assert min(ran.values()) >= 1
    max_runs = scalar(db_path, "SELECT max(runs) FROM instances")
    assert max_runs >= 2, f"no run was ever taken over; {context()}"
