"""Plans in sandbox processes: results, limits that fail only the guilty instance, reuse."""

from __future__ import annotations

import asyncio
import contextvars
import os
import sqlite3
import threading
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import agentflow as af
import sandbox
from sandbox.process import Limits, SandboxPool
from tests.conftest import wait_for


@pytest.fixture
async def pool() -> AsyncIterator[SandboxPool]:
    async with SandboxPool(size=2, max_size=4, limits=Limits(cpu_seconds=0.5)) as pool:
        yield pool


async def test_a_plan_runs_in_a_sandbox_process(
    engine: af.Engine, clock: af.FakeClock, pool: SandboxPool
) -> None:
    source = '''
import json
import math

async def run(event, step):
    page = await step.do("fetch", lambda: tools.fetch(event.payload["url"]))
    lint, tests = await step.all(
        step.do("lint", lambda: tools.check("lint")),
        step.do("tests", lambda: tools.check("tests")),
    )
    await step.sleep("cool down", "1 hour")
    approval = await step.wait_for_event("approval", type="approve", timeout="1 day")
    try:
        await step.do("flaky", lambda: tools.fail(), retries={"limit": 1, "delay": 0})
    except ValueError as exc:
        failure = str(exc)
    print("deployed", page["size"])
    return {"size": page["size"], "checks": [lint, tests], "by": approval.payload["by"],
            "failure": failure, "root": math.sqrt(page["size"]), "j": json.dumps([1])}
'''
    calls: list[str] = []
    logs: list[str] = []

    def fail() -> None:
        calls.append("fail")
        raise ValueError("still broken")

    tools = {
        "fetch": lambda url: calls.append(f"fetch {url}") or {"url": url, "size": 16},
        "check": lambda what: calls.append(what) or f"{what} ok",
        "fail": fail,
    }
    instance = await engine.register("p", pool.runner(source, tools=tools, print_sink=logs.append)
                                     ).create(params={"url": "https://x"})
    await wait_for(instance, "waiting", timeout=30)  # the sleep
    await clock.advance(3600)
    await asyncio.sleep(0.1)
    await wait_for(instance, "waiting", timeout=30)  # the approval
    await instance.send_event("approve", {"by": "ada"})
    details = await wait_for(instance, "complete", "errored")
    assert details.error is None
    assert details.output == {"size": 16, "checks": ["lint ok", "tests ok"], "by": "ada",
                              "failure": "still broken", "root": 4.0, "j": "[1]"}
    # Every step body ran once despite three replays; the failing one once per attempt.
    assert sorted(calls) == sorted(["fetch https://x", "lint", "tests", "fail", "fail"])
    assert "deployed 16\n" in logs


LIMIT_PLANS = {
    "endless loop": "async def run(event, step):\n    while True:\n        pass\n",
    "endless loop in a step": (
        "def spin():\n    while True:\n        pass\n"
        "async def run(event, step):\n    return await step.do('spin', spin)\n"
    ),
    "huge power": "async def run(event, step):\n    return 10 ** (10 ** 9) > 1\n",
    "catastrophic regex": (
        "import re\nasync def run(event, step):\n"
        "    return bool(re.match('(a+)+$', 'a' * 40 + 'b'))\n"
    ),
    "10 GB string": "async def run(event, step):\n    return len('x' * (10 ** 10))\n",
    "billion-element list": "async def run(event, step):\n    return len(list(range(10**9)))\n",
    "deep recursion": (
        "def f(n):\n    return f(n + 1)\nasync def run(event, step):\n    return f(0)\n"
    ),
}
EXPECTED_ERROR = {
    "endless loop": "SandboxLimitError", "endless loop in a step": "SandboxLimitError",
    "huge power": "SandboxLimitError", "catastrophic regex": "SandboxLimitError",
    "10 GB string": "MemoryError", "billion-element list": "MemoryError",
    "deep recursion": "RecursionError",
}


async def test_limits_fail_only_the_guilty_instances(engine: af.Engine, pool: SandboxPool,
                                                     tmp_path: Path) -> None:
    healthy = engine.register(
        "healthy", pool.runner("async def run(event, step):\n"
                               "    return await step.do('a', lambda: event.payload * 2)\n")
    )
    guilty = {
        name: await engine.register(f"bad-{n}", pool.runner(source)).create()
        for n, (name, source) in enumerate(LIMIT_PLANS.items())
    }
    good = [await healthy.create(params=n) for n in range(5)]
    for name, instance in guilty.items():
        details = await wait_for(instance, "errored", "complete", timeout=30)
        assert details.status == "errored", name
        assert details.error is not None and details.error.name == EXPECTED_ERROR[name], (
            name, details.error)
    for n, instance in enumerate(good):
        assert (await wait_for(instance, "complete", timeout=30)).output == n * 2
    # The engine is still fine and the pool still serves plans.
    again = await healthy.create(params=21)
    assert (await wait_for(again, "complete", timeout=30)).output == 42


async def test_a_print_flood_is_bounded(engine: af.Engine, pool: SandboxPool) -> None:
    logs: list[str] = []
    source = "async def run(event, step):\n    for i in range(100000):\n" \
             "        print('x' * 100)\n    return 'done'\n"
    instance = await engine.register("p", pool.runner(source, print_sink=logs.append)).create()
    assert (await wait_for(instance, "complete", timeout=30)).output == "done"
    total = sum(len(line) for line in logs)
    assert 64 * 1024 <= total <= 65 * 1024
    assert logs[-1].endswith("[print output truncated]\n")


async def test_only_plain_data_leaves_the_sandbox(engine: af.Engine, pool: SandboxPool) -> None:
    returns_step = "async def run(event, step):\n    return step\n"
    returns_lambda = ("async def run(event, step):\n    return await step.do('f', lambda: len, "
                      "retries={'limit': 0})\n")
    for name, source in (("step", returns_step), ("lambda", returns_lambda)):
        instance = await engine.register(name, pool.runner(source)).create()
        details = await wait_for(instance, "errored", timeout=30)
        assert details.error is not None and details.error.name == "TypeError"


async def test_the_sandbox_cannot_touch_files(engine: af.Engine, pool: SandboxPool,
                                              tmp_path: Path) -> None:
    canary = tmp_path / "canary.txt"
    canary.write_text("secret")
    before = os.stat(canary)
    source = (
        "async def run(event, step):\n    return await step.do('read', "
        "lambda: tools.echo(event.payload))\n"
    )
    instance = await engine.register("p", pool.runner(source, tools={"echo": lambda p: p})
                                     ).create(params=str(canary))
    assert (await wait_for(instance, "complete", timeout=30)).output == str(canary)
    with pytest.raises(sandbox.PlanRejected):
        pool.runner("async def run(event, step):\n    return open(event.payload).read()\n")
    assert canary.read_text() == "secret"
    assert os.stat(canary).st_mtime == before.st_mtime


async def test_a_warm_process_is_reused_for_the_same_plan(pool: SandboxPool) -> None:
    class Step:
        async def do(self, name: str, fn: Any, **_: Any) -> Any:
            return await fn()

    class Event:
        payload = None
        timestamp = None
        instance_id = "i"
        workflow_name = "w"

    runner = pool.runner("async def run(event, step):\n    return await step.do('a', lambda: 1)\n")
    assert [await runner(Event(), Step()) for _ in range(5)] == [1] * 5
    assert pool._count <= pool.max_size
    assert sum(1 for p in pool._idle if p.plan_sha is not None) == 1


async def test_a_crashed_process_is_replaced(engine: af.Engine, pool: SandboxPool) -> None:
    kill = "async def run(event, step):\n    return len('x' * (10 ** 10))\n"
    ok = "async def run(event, step):\n    return await step.do('a', lambda: 'fine')\n"
    first = await engine.register("kill", pool.runner(kill)).create()
    await wait_for(first, "errored", timeout=30)
    results = await asyncio.gather(*[
        wait_for(await engine.register(f"ok{n}", pool.runner(ok)).create(), "complete",
                 timeout=30)
        for n in range(3)
    ])
    assert [d.output for d in results] == ["fine"] * 3


PRINTING_PLAN = (
    "async def run(event, step):\n    print('starting', event.payload)\n"
    "    await step.sleep('nap', 10)\n    print('woke')\n    return 'ok'\n"
)


@pytest.mark.parametrize("mode", ["process", "in-process"])
async def test_print_goes_to_the_instance_log(
    engine: af.Engine, clock: af.FakeClock, pool: SandboxPool, mode: str
) -> None:
    runner = (pool.runner(PRINTING_PLAN) if mode == "process"
              else sandbox.compile_plan(PRINTING_PLAN).runner())
    instance = await engine.register("p", runner).create(params=7)
    await wait_for(instance, "waiting", timeout=30)
    await clock.advance(10)
    assert (await wait_for(instance, "complete", timeout=30)).output == "ok"
    logs = [e.data["text"] async for e in instance.events(follow=False)
            if e.type == "instance.log"]
    # The replay after the sleep prints 'starting' again, but only the first run logs it.
    assert logs == ["starting 7\n", "woke\n"]


def test_sandbox_processes_lock_themselves_down(tmp_path: Path) -> None:
    """Under the policy, a second wall: once locked, the process can open no file, import
    nothing new and start no process, even from code the policy would never let a plan run."""
    import subprocess
    import sys

    canary = tmp_path / "canary.txt"
    canary.write_text("secret")
    script = (
        "import os, sys\nfrom sandbox._child import lock_down\nlock_down()\n"
        "results = []\n"
        f"for attempt in (lambda: open({str(canary)!r}).read(), lambda: __import__('socket'),"
        f" lambda: os.system('true'), lambda: open({str(tmp_path / 'new.txt')!r}, 'w')):\n"
        "    try:\n        attempt()\n        results.append('allowed')\n"
        "    except Exception as exc:\n        results.append(type(exc).__name__)\n"
        "print(','.join(results))\n"
    )
    out = subprocess.run([sys.executable, "-I", "-c", script], capture_output=True, text=True,
                         timeout=30, check=True).stdout.strip()
    assert out == ",".join(["SandboxViolation"] * 4)
    assert canary.read_text() == "secret"
    assert not (tmp_path / "new.txt").exists()


_CALLER: contextvars.ContextVar[str] = contextvars.ContextVar("caller", default="nobody")


async def test_tools_and_the_step_see_the_context_variables_of_the_run(
    pool: SandboxPool,
) -> None:
    """The host answers a sandbox's messages in the context of the run that awaits the
    runner, as code of that run would: a tool or step reads the run's context variables."""
    source = (
        "async def run(event, step):\n"
        "    first = await step.do('ask', lambda: tools.caller())\n"
        "    second = await step.do('again', lambda: tools.caller())\n"
        "    return [first, second]\n"
    )
    steps: list[str] = []

    class RecordingStep:
        async def do(self, name: str, fn: Any, **_: Any) -> Any:
            steps.append(_CALLER.get())
            value = fn()
            return await value if hasattr(value, "__await__") else value

    runner = pool.runner(source, tools={"caller": _CALLER.get})

    async def run_as(who: str) -> Any:
        _CALLER.set(who)
        event = af.Event(None, datetime.now(UTC), who, "ctx")
        return await runner(event, RecordingStep())

    results = await asyncio.gather(run_as("ada"), run_as("grace"))
    assert results == [["ada", "ada"], ["grace", "grace"]]
    assert sorted(steps) == ["ada", "ada", "grace", "grace"]
    assert _CALLER.get() == "nobody"  # nothing leaked into the caller's context


@pytest.mark.parametrize("retried", [False, True], ids=["first-attempt", "retry"])
async def test_a_step_timeout_ends_a_body_blocked_in_a_slow_tool(
    db_url: str, pool: SandboxPool, retried: bool,
) -> None:
    # The host runs a step with a timeout under its deadline (the child does not run it
    # ahead); when the deadline passes, the tool call the body is blocked in is answered
    # with a TimeoutError, so the plan goes on at once, not when the tool returns.
    source = '''
async def run(event, step):
    try:
        return await step.do("slow", lambda: tools.slow(), timeout=0.3,
                             retries={"limit": RETRIES, "delay": 0})
    except TimeoutError as exc:
        return "timed out: " + str(exc)
'''.replace("RETRIES", "1" if retried else "0")
    attempts: list[float] = []
    finished: list[str] = []

    async def slow() -> str:
        attempts.append(asyncio.get_running_loop().time())
        if retried and len(attempts) == 1:
            raise ValueError("first attempt fails at once")
        await asyncio.sleep(3)
        finished.append("tool")
        return "too late"

    async with af.Engine.open(db_url, poll_interval=0.05) as engine:
        binding = engine.register("t", pool.runner(source, tools={"slow": slow}))
        started = asyncio.get_running_loop().time()
        details = await wait_for(await binding.create(), "complete", "errored", timeout=20)
        took = asyncio.get_running_loop().time() - started
        assert details.error is None, details.error
        attempt = 2 if retried else 1
        assert details.output == (
            f"timed out: step 'slow' attempt {attempt} timed out after 0.3 seconds")
        assert len(attempts) == attempt
        assert took < 2.5  # not held until the tool's 3 seconds are up
        # the process is reused: nothing left over from the abandoned call reaches the next
        quick = engine.register("q", pool.runner(
            "async def run(event, step):\n"
            "    return await step.do('q', lambda: tools.echo(event.payload))\n",
            tools={"echo": lambda value: value}))
        for n in range(3):
            assert (await wait_for(await quick.create(params=n), "complete")).output == n
    assert finished == []  # the run ended first: its tool calls were cancelled


async def test_a_timed_out_attempt_stops_its_tool_before_the_retry(
    db_url: str, pool: SandboxPool,
) -> None:
    # As an in-process body would be cancelled: a retry never runs beside the tool call of
    # the attempt that timed out.
    source = '''
async def run(event, step):
    try:
        return await step.do("deploy", lambda: tools.deploy(), timeout=0.3,
                             retries={"limit": 2, "delay": 0})
    except TimeoutError as exc:
        return "timed out: " + str(exc)
'''
    live, peak, runs = [0], [0], []

    async def deploy() -> str:
        live[0] += 1
        peak[0] = max(peak[0], live[0])
        runs.append("deploy")
        try:
            await asyncio.sleep(2)
        finally:
            live[0] -= 1
        return "done"

    async with af.Engine.open(db_url, poll_interval=0.05) as engine:
        binding = engine.register("d", pool.runner(source, tools={"deploy": deploy}))
        details = await wait_for(await binding.create(), "complete", "errored", timeout=20)
    assert details.output == "timed out: step 'deploy' attempt 3 timed out after 0.3 seconds"
    assert runs == ["deploy"] * 3
    assert peak[0] == 1


async def test_a_tool_runs_in_a_task_of_its_own(db_url: str, pool: SandboxPool) -> None:
    # Tools are the application's code: asyncio.timeout (and wait_for from 3.12) need one.
    source = '''
async def run(event, step):
    return await step.do("fetch", lambda: tools.fetch("x"))
'''

    async def fetch(what: str) -> str:
        async with asyncio.timeout(5):
            await asyncio.sleep(0)
        assert asyncio.current_task() is not None
        return f"fetched {what}"

    async with af.Engine.open(db_url, poll_interval=0.05) as engine:
        binding = engine.register("f", pool.runner(source, tools={"fetch": fetch}))
        details = await wait_for(await binding.create(), "complete", "errored", timeout=20)
    assert details.error is None, details.error
    assert details.output == "fetched x"


@pytest.mark.parametrize("retried", [False, True], ids=["no-retry", "retry"])
async def test_a_timed_out_attempt_that_goes_on_runs_no_more_tools(
    db_url: str, pool: SandboxPool, retried: bool,
) -> None:
    # The body catches the TimeoutError of its stopped tool call and calls another tool: an
    # in-process body would have been cancelled at that await, so the host refuses it; the
    # retry's own calls run.
    source = '''
async def attempt():
    try:
        tools.slow()
    except TimeoutError:
        pass
    return tools.deploy()

async def run(event, step):
    try:
        return await step.do("deploy", attempt, timeout=0.3,
                             retries={"limit": RETRIES, "delay": 0})
    except TimeoutError as exc:
        return "timed out"
'''.replace("RETRIES", "1" if retried else "0")
    slow_calls: list[int] = []
    deploys: list[str] = []

    async def slow() -> None:
        slow_calls.append(1)
        if len(slow_calls) == 1:
            await asyncio.sleep(3)

    def deploy() -> str:
        deploys.append("deploy")
        return "deployed"

    async with af.Engine.open(db_url, poll_interval=0.05) as engine:
        binding = engine.register("t", pool.runner(source, tools={"slow": slow,
                                                                  "deploy": deploy}))
        details = await wait_for(await binding.create(), "complete", "errored", timeout=20)
        await asyncio.sleep(0.2)  # a late tool call of the first attempt would be served now
    assert details.error is None, details.error
    if retried:
        assert details.output == "deployed"
        assert deploys == ["deploy"]  # the retry's, never the timed-out attempt's
    else:
        assert details.output == "timed out"
        assert deploys == []


async def test_parallel_gates_in_a_sandboxed_plan_are_asked_together(
    db_url: str, pool: SandboxPool,
) -> None:
    # The first gate hibernates the run; the host serves what the child had already sent
    # (the second gate) before ending it, so both are open at once, as in process.
    source = '''
async def run(event, step):
    eu, us = await step.all(step.wait_for_approval("deploy eu", prompt="EU?"),
                            step.wait_for_approval("deploy us", prompt="US?"))
    return [eu.approved, us.approved]
'''
    async with af.Engine.open(db_url, poll_interval=0.05) as engine:
        instance = await engine.register("gates", pool.runner(source)).create(id="g")
        await wait_for(instance, "waiting", timeout=20)
        await asyncio.sleep(0.1)
        assert sorted(r.gate for r in await instance.approvals()) == ["deploy eu", "deploy us"]
        await instance.approve("deploy us")
        await asyncio.sleep(0.2)
        assert [r.gate for r in await instance.approvals()] == ["deploy eu"]
        await instance.reject("deploy eu")
        details = await wait_for(instance, "complete", "errored", timeout=20)
    assert details.output == [False, True]


async def test_a_sandboxed_sibling_gate_after_a_late_commit_is_asked_in_the_same_run(
    db_url: str, db_path: Path, pool: SandboxPool,
) -> None:
    # The branch's step is journaled after the other branch hibernated (another process holds
    # the write lock): the host drains the child again after that reply, so the gate the
    # branch then reaches is asked in the same run.
    if not db_url.startswith("sqlite"):
        pytest.skip("holds the SQLite write lock from another connection")
    source = '''
async def run(event, step):
    async def us():
        await step.do("prepare", lambda: tools.prepare())
        return await step.wait_for_approval("deploy us", prompt="US?")
    us, eu = await step.all(us(), step.wait_for_approval("deploy eu", prompt="EU?"))
    return [eu.approved, us.approved]
'''

    def prepare() -> int:
        other = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
        other.execute("BEGIN IMMEDIATE")
        threading.Timer(0.05, lambda: (other.execute("COMMIT"), other.close())).start()
        return 1

    async with af.Engine.open(db_url, poll_interval=0.05) as engine:
        runner = pool.runner(source, tools={"prepare": prepare})
        instance = await engine.register("gates", runner).create(id="g")
        await wait_for(instance, "waiting", timeout=20)
        await asyncio.sleep(0.3)
        assert sorted(r.gate for r in await instance.approvals()) == ["deploy eu", "deploy us"]
        runs = [h.data async for h in instance.events(follow=False)
                if h.type == "instance.started"]
        assert runs == [{"run": 1}]


async def test_a_step_run_ahead_in_the_child_is_stopped_at_the_default_timeout(
    db_url: str,
) -> None:
    # Without an explicit timeout the child runs the step's first attempt ahead, under no
    # deadline of the engine's; the host stops its tool calls after the default timeout
    # (here 0.3 s) as the engine stops an in-process body, rather than waiting forever.
    source = '''
async def run(event, step):
    try:
        return await step.do("hang", lambda: tools.hang(), retries={"limit": 0})
    except TimeoutError as exc:
        return "stopped: " + str(exc)
'''
    finished: list[str] = []

    async def hang() -> str:
        await asyncio.sleep(30)
        finished.append("hang")
        return "too late"

    limits = Limits(cpu_seconds=0.5, ahead_step_timeout=0.3)
    async with SandboxPool(size=1, limits=limits) as pool, \
            af.Engine.open(db_url, poll_interval=0.05) as engine:
        binding = engine.register("h", pool.runner(source, tools={"hang": hang}))
        started = asyncio.get_running_loop().time()
        details = await wait_for(await binding.create(), "complete", "errored", timeout=20)
        took = asyncio.get_running_loop().time() - started
    assert details.error is None, details.error
    assert details.output == (
        "stopped: step 'hang' ran past its 0.3-second timeout; tool 'hang' was stopped")
    assert took < 5
    assert finished == []
