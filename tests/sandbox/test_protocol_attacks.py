"""Attacks on the process boundary: the messages between a sandbox process and the host.

A plan in a sandbox process reaches the host only by messages; the host performs every step and
tool call. Here plans craft hostile step arguments, flood the host, return and raise oversized
things, and hand tools odd values; the child is killed from outside; runs leave work behind for
the next run of their process; and a fake child (``fake_child.py``) speaks garbage, oversized
frames, unknown ops and malformed requests. Whatever happens, the host must stay up, fail only
the run concerned (with ``SandboxCrashed`` when the child breaks the protocol), never hang it,
never do what an unknown op asks, and give tools nothing but plain data.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import logging
import os
import signal
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

import agentflow as af
import sandbox._host_pipes
import sandbox.process
from sandbox.process import Limits, SandboxPool
from tests.conftest import wait_for
from tests.sandbox._harness import PLAIN_TYPE_NAMES, ToolBox, plain_types, plan

FAKE_CHILD = Path(__file__).with_name("fake_child.py")
LIMITS = Limits(cpu_seconds=0.5)
DONE = ("complete", "errored", "terminated")
BACKSLASH = "chr(92)"  # a backslash, as plan source (no escaping through two string levels)
HANG = 2.0  # seconds after which a run that should have ended counts as hung


@pytest.fixture
def quiet(caplog: pytest.LogCaptureFixture) -> None:
    """The host logs the exceptions of its dead tasks with their (multi-megabyte) messages."""
    caplog.set_level(logging.CRITICAL, logger="asyncio")


@pytest.fixture
async def pool() -> AsyncIterator[SandboxPool]:
    async with SandboxPool(size=1, max_size=4, limits=LIMITS) as pool:
        yield pool
    # Subprocess transports the pool left unclosed (see the oversized-message tests) are
    # finalised now, while their event loop is open, not at a random point later.
    gc.collect()


_names = itertools.count()


async def start(engine: af.Engine, pool: SandboxPool, source: str, *,
                tools: dict[str, Callable[..., Any]] | None = None,
                params: Any = None) -> af.Instance:
    runner = pool.runner(plan(source), tools=tools or {})
    return await engine.register(f"p{next(_names)}", runner).create(params=params)


async def finish(engine: af.Engine, pool: SandboxPool, source: str, *,
                 tools: dict[str, Callable[..., Any]] | None = None, params: Any = None,
                 timeout: float = 10.0) -> af.InstanceDetails:
    instance = await start(engine, pool, source, tools=tools, params=params)
    return await wait_for(instance, *DONE, timeout=timeout)


def error_name(details: af.InstanceDetails) -> str | None:
    return details.error.name if details.error is not None else None


BENIGN = """
    async def run(event, step):
        total = 0
        for i in range(15):
            total += await step.do("tick", lambda: tools.tick(i))
        return total
"""


async def _tick(i: int) -> int:
    await asyncio.sleep(0.02)
    return i


async def start_benign(engine: af.Engine, pool: SandboxPool) -> af.Instance:
    """A plan that takes a few tenths of a second of host round trips, to run alongside."""
    return await start(engine, pool, BENIGN, tools={"tick": _tick})


async def assert_benign_completes(instance: af.Instance) -> None:
    details = await wait_for(instance, *DONE, timeout=20)
    assert details.status == "complete", details.error
    assert details.output == sum(range(15))


async def assert_pool_serves(engine: af.Engine, pool: SandboxPool) -> None:
    details = await finish(engine, pool, """
        async def run(event, step):
            return await step.do("ok", lambda: "still serving")
    """)
    assert details.status == "complete", details.error
    assert details.output == "still serving"


class LoopWatch:
    """Measures the longest time the host's event loop went without running other tasks."""

    def __init__(self) -> None:
        self.worst = 0.0
        self._task = asyncio.create_task(self._watch())

    async def _watch(self) -> None:
        last = time.perf_counter()
        while True:
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            self.worst = max(self.worst, now - last - 0.005)
            last = now

    def stop(self) -> float:
        self._task.cancel()
        return self.worst


# -- crafted step arguments ------------------------------------------------------------------
CaseExpectation = tuple[str, set[str] | None, Any]  # (status, error names, output)

STEP_ARGUMENTS: dict[str, tuple[str, CaseExpectation]] = {
    "seven-megabyte-step-name": ("""
        async def run(event, step):
            return await step.do("x" * 7000000, lambda: 1)
    """, ("errored", {"InvalidStepNameError"}, None)),
    "step-name-not-a-string": ("""
        async def run(event, step):
            name = ["a"]
            return await step.do("a", lambda: 1) + await step.do(name, lambda: 1)
    """, ("errored", {"InvalidStepNameError"}, None)),
    "control-characters-in-name": ("""
        async def run(event, step):
            return await step.do("a\\n\\x00b", lambda: 1)
    """, ("errored", {"InvalidStepNameError"}, None)),
    "live-objects-as-arguments": ("""
        async def run(event, step):
            caught = []
            for bad in [len, step, event, run, {1, 2}, b"x", ValueError("x")]:
                try:
                    await step.do("a", lambda: 1, timeout=bad)
                except TypeError:
                    caught.append("TypeError")
            name = len
            try:
                await step.sleep(name, 1)
            except TypeError:
                caught.append("TypeError")
            return caught
    """, ("complete", None, ["TypeError"] * 8)),
    "nan-and-infinity": ("""
        async def run(event, step):
            caught = []
            for bad in [float("nan"), float("inf"), -float("inf")]:
                try:
                    await step.sleep("nap", bad)
                except TypeError:
                    caught.append("TypeError")
                try:
                    await step.do("a", lambda: 1, retries={"limit": 0, "delay": bad})
                except TypeError:
                    caught.append("TypeError")
            return caught
    """, ("complete", None, ["TypeError"] * 6)),
    "non-string-dict-keys": ("""
        async def run(event, step):
            try:
                await step.do("a", lambda: 1, retries={(1, 2): 3})
            except TypeError:
                return "TypeError"
    """, ("complete", None, "TypeError")),
    "int-dict-keys": ("""
        async def run(event, step):
            return await step.do("a", lambda: 1, retries={1: 2})
    """, ("errored", {"InvalidArgumentError"}, None)),
    "huge-int-argument": ("""
        async def run(event, step):
            try:
                await step.do("a", lambda: 1, timeout=10 ** 5000)
            except TypeError:
                return "TypeError"
    """, ("complete", None, "TypeError")),
    "huge-retry-limit": ("""
        async def run(event, step):
            return await step.do("a", lambda: 7, retries={"limit": 10 ** 4000, "delay": 0})
    """, ("complete", None, 7)),
    "deeply-nested-argument": ("""
        async def run(event, step):
            deep = []
            for i in range(100000):
                deep = [deep]
            return await step.do("a", lambda: 1, retries={"limit": deep})
    """, ("errored", {"SandboxCrashed", "RecursionError", "TypeError"}, None)),
    "nested-but-decodable-argument": ("""
        async def run(event, step):
            deep = 1
            for i in range(500):
                deep = {"d": deep}
            return await step.do("a", lambda: 1, retries=deep)
    """, ("errored", {"InvalidArgumentError"}, None)),
    "eight-megabyte-string-argument": ("""
        async def run(event, step):
            return await step.do("a", lambda: 1, retries={"delay": "x" * 8000000})
    """, ("errored", {"InvalidDurationError"}, None)),
    "duration-overflowing-to-infinity": ("""
        async def run(event, step):
            return await step.sleep("nap", "9" * 400 + " years")
    """, ("errored", {"InvalidDurationError"}, None)),
    "huge-event-type": ("""
        async def run(event, step):
            return await step.wait_for_event("w", type="t" * 5000000)
    """, ("errored", {"InvalidEventTypeError"}, None)),
    "unknown-retries-keys": ("""
        async def run(event, step):
            return await step.do("a", lambda: 1, retries={"limit": 0, "self": 1, "_run": 2})
    """, ("errored", {"InvalidArgumentError"}, None)),
}


@pytest.mark.parametrize("case", list(STEP_ARGUMENTS), ids=list(STEP_ARGUMENTS))
async def test_crafted_step_arguments_fail_only_that_call(
    engine: af.Engine, pool: SandboxPool, case: str
) -> None:
    source, (status, errors, output) = STEP_ARGUMENTS[case]
    started = time.perf_counter()
    details = await finish(engine, pool, source)
    assert time.perf_counter() - started < 10
    assert details.status == status, details.error
    if errors is not None:
        assert error_name(details) in errors, details.error
    else:
        assert details.output == output
    await assert_pool_serves(engine, pool)


HUGE_HOST_ERRORS = {
    # The engine's error message quotes the value with repr(): every backslash doubles there,
    # and doubles again in JSON, so the host's reply outgrows the wire limit.
    "step-argument": f"""
        async def run(event, step):
            return await step.do("a", lambda: 1, retries={{"limit": {BACKSLASH} * 3000000}})
    """,
    # A realistic tool that names its argument in its error: ToolBox.load raises OSError
    # ("File name too long: '...'") for a long name.
    "tool-error": f"""
        async def run(event, step):
            return await step.do("a", lambda: tools.load({BACKSLASH} * 3000000),
                                 retries={{"limit": 0}})
    """,
}


@pytest.mark.parametrize("case", list(HUGE_HOST_ERRORS), ids=list(HUGE_HOST_ERRORS))
async def test_a_host_reply_too_large_for_the_wire_does_not_hang_the_run(
    engine: af.Engine, pool: SandboxPool, tmp_path: Path, case: str, quiet: None
) -> None:
    """FINDING: ``_Session._reply`` raises ``WireError`` for a reply over 8 MiB; the ``_step``
    and ``_tool`` tasks call it from their ``except`` clause and die with it, so the child
    waits for an answer that never comes. The idle child uses no CPU, so the watchdog never
    fires: the instance stays ``running`` forever and keeps its sandbox process."""
    box = ToolBox(tmp_path / "docs")
    instance = await start(engine, pool, HUGE_HOST_ERRORS[case], tools={"load": box.load})
    details = await wait_for(instance, *DONE, timeout=HANG)
    assert details.status == "errored"


async def test_hung_runs_do_not_starve_every_other_plan(engine: af.Engine, quiet: None) -> None:
    """FINDING (host-wide hang): the runs of the previous test keep their sandbox processes,
    so ``max_size`` of them leave the pool with none: every other plan, of any tenant, then
    waits in ``SandboxPool._acquire`` for ever."""
    async with SandboxPool(size=1, max_size=2, limits=LIMITS) as small_pool:
        for _ in range(2):
            await start(engine, small_pool, HUGE_HOST_ERRORS["step-argument"])
        await asyncio.sleep(0.5)
        innocent = await start(engine, small_pool, """
            async def run(event, step):
                return await step.do("ok", lambda: "served")
        """)
        details = await wait_for(innocent, *DONE, "running", timeout=HANG)
        deadline = time.monotonic() + HANG
        while details.status not in DONE and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
            details = await innocent.status()
    assert details.status == "complete", f"an innocent run is {details.status}"


# -- floods ----------------------------------------------------------------------------------
FLOODS = {
    "100k-sequential-steps": """
        async def run(event, step):
            for i in range(100000):
                await step.do("s", lambda: i)
            return "all done"
    """,
    "100k-tool-calls-in-one-body": """
        def body():
            for i in range(100000):
                tools.tick_sync(i)
            return "all done"
        async def run(event, step):
            return await step.do("s", body)
    """,
    "100k-failing-retries": """
        def body():
            raise ValueError("again")
        async def run(event, step):
            return await step.do("s", body, retries={"limit": 100000, "delay": 0,
                                                      "backoff": "constant"})
    """,
    "100k-unknown-step-names": """
        async def run(event, step):
            for i in range(100000):
                await step.do("step " + str(i), lambda: None)
            return "all done"
    """,
}


@pytest.mark.parametrize("case", list(FLOODS), ids=list(FLOODS))
async def test_a_flood_of_calls_fails_within_its_budget(
    engine: af.Engine, pool: SandboxPool, case: str
) -> None:
    started = time.perf_counter()
    watch = LoopWatch()
    flood = await start(engine, pool, FLOODS[case], tools={"tick_sync": lambda i: i})
    benign = await start_benign(engine, pool)
    details = await wait_for(flood, *DONE, timeout=30)
    elapsed = time.perf_counter() - started
    stall = watch.stop()
    assert stall < 0.5, f"the host's event loop stalled for {stall:.2f} s"
    assert elapsed < 30
    if details.status == "complete":
        assert details.output == "all done"
    else:
        assert error_name(details) in {
            "SandboxLimitError", "StepLimitExceededError", "ValueError"}, details.error
    await assert_benign_completes(benign)


async def test_thousands_of_parallel_steps(engine: af.Engine, pool: SandboxPool) -> None:
    benign = await start_benign(engine, pool)
    details = await finish(engine, pool, """
        async def run(event, step):
            results = await step.all(*[step.do("p", lambda: 2) for i in range(3000)])
            return [len(results), sum(results)]
    """, timeout=30)
    assert details.status == "complete", details.error
    assert details.output == [3000, 6000]
    await assert_benign_completes(benign)


async def test_a_plan_that_never_awaits_its_steps(engine: af.Engine, pool: SandboxPool) -> None:
    calls: list[str] = []
    instance = await start(engine, pool, """
        async def run(event, step):
            for i in range(1000):
                step.do("never", lambda: tools.mark("ran"))
                step.sleep("never", 3600)
                step.wait_for_event("never", type="x")
                step.all(step.do("never", lambda: tools.mark("ran")))
            return "ok"
    """, tools={"mark": calls.append})
    details = await wait_for(instance, *DONE, timeout=10)
    assert details.status == "complete" and details.output == "ok"
    assert calls == []
    kinds = {e.type async for e in instance.events(follow=False)}
    assert not {k for k in kinds if k.startswith(("step.", "sleep.", "wait."))}


HUGE_OUTPUTS = {
    "two-megabytes": ("return 'x' * 2000000", {"PayloadError"}),
    "step-result-over-a-mebibyte": (
        "return await step.do('big', lambda: 'x' * 2000000, retries={'limit': 0})",
        {"PayloadError"}),
}


@pytest.mark.parametrize("case", list(HUGE_OUTPUTS), ids=list(HUGE_OUTPUTS))
async def test_a_huge_output_fails_only_its_instance(
    engine: af.Engine, pool: SandboxPool, case: str
) -> None:
    statement, errors = HUGE_OUTPUTS[case]
    benign = await start_benign(engine, pool)
    started = time.perf_counter()
    details = await finish(engine, pool, f"""
        async def run(event, step):
            {statement}
    """)
    assert time.perf_counter() - started < 10
    assert details.status == "errored" and error_name(details) in errors, details.error
    await assert_benign_completes(benign)
    await assert_pool_serves(engine, pool)


OVER_THE_WIRE_LIMIT = {
    "output": "return 'x' * 9000000",
    "output-of-many-small-strings": "return ['x' * 10] * 1000000",
    "step-name": "return await step.do('x' * 9000000, lambda: 1)",
    "step-result": "return await step.do('big', lambda: 'x' * 9000000, retries={'limit': 0})",
    "error-message": "return await step.do('e', raise_big, retries={'limit': 0})",
    "tool-arguments": "return await step.do('t', lambda: tools.tick_sync('x' * 9000000))",
    "print-line": "print('x' * 9000000)\n    return 'printed'",
}


async def test_messages_over_the_wire_limit_fail_only_their_instance(
    engine: af.Engine
) -> None:
    """Each plan makes the child send one message over 8 MiB: the host refuses it
    (``WireError``), that run fails with ``SandboxCrashed`` and its process is replaced. They
    run at once, next to a benign instance (each takes up to 5 s: see the next test)."""
    async with SandboxPool(size=2, max_size=len(OVER_THE_WIRE_LIMIT) + 2, limits=LIMITS
                           ) as pool:
        benign = await start_benign(engine, pool)
        started = time.perf_counter()
        watch = LoopWatch()
        instances = {
            name: await start(engine, pool, "def raise_big():\n    raise ValueError('x' * 9000000)"
                              "\nasync def run(event, step):\n    " + statement + "\n",
                              tools={"tick_sync": lambda x: len(x)})
            for name, statement in OVER_THE_WIRE_LIMIT.items()
        }
        outcomes = {name: await wait_for(instance, *DONE, timeout=20)
                    for name, instance in instances.items()}
        assert time.perf_counter() - started < 15
        stall = watch.stop()
        assert stall < 0.5, f"the host's event loop stalled for {stall:.2f} s"
        await assert_benign_completes(benign)
        await assert_pool_serves(engine, pool)
    gc.collect()  # the transports of the killed processes (see the next test)
    wrong = {name: (d.status, d.output, d.error) for name, d in outcomes.items()
             if d.status != "errored" or error_name(d) != "SandboxCrashed"}
    # A line printed is cut to the 64 KiB print budget before it is sent.
    assert wrong == {"print-line": ("complete", "printed", None)}


async def test_an_oversized_message_fails_its_run_promptly(
    engine: af.Engine, pool: SandboxPool
) -> None:
    started = time.perf_counter()
    details = await finish(engine, pool, """
        async def run(event, step):
            return "x" * 9000000
    """)
    assert error_name(details) == "SandboxCrashed"
    # (the host reads the child's output itself: reaping the killed process does not wait
    # for a pipe left mid-message)
    assert time.perf_counter() - started < 2.5
    await assert_benign_completes(await start_benign(engine, pool))  # the pool recovered


# -- tools only ever see plain data ----------------------------------------------------------
async def test_tools_receive_only_plain_data(engine: af.Engine) -> None:
    seen: list[Any] = []

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append([list(args), kwargs])
        return {"echo": [list(args), kwargs]}

    pool = await SandboxPool(size=1, limits=Limits(cpu_seconds=5)).start()
    details = await finish(engine, pool, """
        import datetime
        import collections
        def calls():
            results = []
            results.append(tools.spy((1, (2, 3)), {"k": (4,)}, 1.5, -0.0, 10 ** 300, None,
                                     True, "\\u202e\\x00", key=[{"a": (1,)}]))
            results.append(tools.spy(**{"not an identifier": 1, "__class__": 2}))
            results.append(tools.spy(*range(50), **{str(i): i for i in range(50)}))
            results.append(tools.spy(collections.OrderedDict(a=1), collections.Counter("ab"),
                                     collections.defaultdict(list), list("xyz")))
            caught = 0
            for bad in [len, {1, 2}, frozenset(), b"raw", str.upper, tools,
                        datetime.datetime(2020, 1, 1), ValueError("x"), range(3),
                        iter([1]), collections.deque([1]), float("nan"), 10 ** 5000]:
                try:
                    tools.spy(bad)
                except (TypeError, ValueError):
                    caught += 1
                try:
                    tools.spy(value=[{"nested": bad}])
                except (TypeError, ValueError):
                    caught += 1
            results.append(caught)
            return results
        async def run(event, step):
            return await step.do("calls", calls, retries={"limit": 0})
    """, tools={"spy": spy})
    await pool.close()
    assert details.status == "complete", details.error
    assert details.output[-1] == 26
    for call in seen:
        assert plain_types(call) <= PLAIN_TYPE_NAMES, call
    assert seen[0] == [[[1, [2, 3]], {"k": [4]}, 1.5, -0.0, 10 ** 300, None, True,
                        "\u202e\x00"], {"key": [{"a": [1]}]}]
    assert seen[1] == [[], {"not an identifier": 1, "__class__": 2}]


# -- exceptions with hostile messages --------------------------------------------------------
HOSTILE_EXCEPTIONS = {
    "seven-megabyte-message": ("""
        def body():
            raise ValueError("x" * 7000000)
    """, {"ValueError"}),
    "str-raises-recursion-error": ("""
        def body():
            t = ()
            for i in range(100000):
                t = (t,)
            return {}[t]
    """, {"RecursionError", "SandboxCrashed"}),
    "str-raises-on-a-huge-int": ("""
        def body():
            raise ValueError(10 ** 100000)
    """, {"ValueError"}),
    "live-objects-in-args": ("""
        def body():
            raise ValueError(tools, len, ValueError)
    """, {"ValueError"}),
    "exception-as-message": ("""
        def body():
            raise KeyError(KeyError(KeyError("x")))
    """, {"KeyError"}),
    "stop-iteration": ("""
        def body():
            raise StopIteration("from a step")
    """, {"RuntimeError", "StopIteration"}),
}
RAISE_IN_A_STEP = """
    async def run(event, step):
        return await step.do("hostile", body, retries={"limit": 1, "delay": 0})
"""


@pytest.mark.parametrize("case", list(HOSTILE_EXCEPTIONS), ids=list(HOSTILE_EXCEPTIONS))
async def test_a_step_raising_a_hostile_exception_fails_only_its_instance(
    engine: af.Engine, pool: SandboxPool, case: str
) -> None:
    body, errors = HOSTILE_EXCEPTIONS[case]
    benign = await start_benign(engine, pool)
    started = time.perf_counter()
    details = await finish(engine, pool, plan(body) + plan(RAISE_IN_A_STEP))
    assert time.perf_counter() - started < 10
    assert details.status == "errored" and error_name(details) in errors, details.error
    await assert_benign_completes(benign)
    await assert_pool_serves(engine, pool)


async def test_a_hostile_exception_can_be_caught_and_the_run_goes_on(
    engine: af.Engine, pool: SandboxPool
) -> None:
    details = await finish(engine, pool, """
        def body():
            t = ()
            for i in range(100000):
                t = (t,)
            return {}[t]
        async def run(event, step):
            try:
                await step.do("hostile", body, retries={"limit": 0})
            except Exception as exc:
                caught = str(exc)[:40]
            return [caught, await step.do("after", lambda: "went on")]
    """)
    assert details.status == "complete", details.error
    assert details.output[1] == "went on"


# -- the child killed from outside -----------------------------------------------------------
def _only_process(pool: SandboxPool) -> int:
    assert len(pool._idle) == 1
    return pool._idle[0].proc.pid


@pytest.mark.parametrize("where", ["in-a-tool", "computing"])
async def test_a_child_killed_mid_run_fails_its_run_and_is_replaced(
    engine: af.Engine, where: str
) -> None:
    async with SandboxPool(size=1, max_size=1, limits=Limits(cpu_seconds=20)) as pool:
        pid = _only_process(pool)
        entered = asyncio.Event()

        async def kill_me() -> str:
            entered.set()
            if where == "in-a-tool":
                os.kill(pid, signal.SIGKILL)
                await asyncio.sleep(0.2)
            return "survived"

        def mark() -> str:
            entered.set()
            return "marked"

        source = {
            "in-a-tool": """
                async def run(event, step):
                    return await step.do("k", lambda: tools.kill_me())
            """,
            "computing": """
                def spin():
                    while True:
                        pass
                async def run(event, step):
                    await step.do("m", lambda: tools.mark())
                    return await step.do("spin", spin)
            """,
        }[where]
        instance = await start(engine, pool, source, tools={"kill_me": kill_me, "mark": mark})
        await asyncio.wait_for(entered.wait(), 10)
        if where != "in-a-tool":
            await asyncio.sleep(0.1)
            os.kill(pid, signal.SIGKILL)
        details = await wait_for(instance, *DONE, timeout=10)
        assert details.status == "errored"
        assert error_name(details) == "SandboxCrashed", details.error
        await asyncio.sleep(0.05)
        assert pid not in [p.proc.pid for p in pool._idle]
        await assert_pool_serves(engine, pool)


async def test_a_child_killed_while_idle_does_not_fail_the_next_run(
    engine: af.Engine, pool: SandboxPool
) -> None:
    """FINDING: the pool hands out an idle process without checking that it is alive. One
    that died while idle (OOM killer, an operator, a crash) fails the next, innocent run with
    a raw ``ConnectionResetError`` from writing the ``start`` (or ``load``) message."""
    await assert_pool_serves(engine, pool)
    os.kill(_only_process(pool), signal.SIGKILL)
    await asyncio.sleep(0.1)
    await assert_pool_serves(engine, pool)


# -- what one run leaves behind for the next run in the same process -------------------------
LEFTOVER = """
    LOOT = []

    async def fail():
        raise ValueError("end the run now")

    async def linger(step):
        return await step.do("x", lambda: LOOT.append(tools.fetch("sent by A")) or "planted")

    async def run(event, step):
        if event.payload == "attacker":
            try:
                await step.all(fail(), linger(step))
            except ValueError:
                pass
            return list(LOOT)
        mine = await step.do("x", lambda: tools.fetch("sent by B"))
        if event.payload == "victim that sleeps":
            await step.sleep("replay me", 1)
        return mine
"""


async def test_a_finished_run_leaves_nothing_running_for_the_next_run(
    engine: af.Engine, clock: af.FakeClock
) -> None:
    """FINDING (cross-tenant escape): when one coroutine of ``step.all`` fails at once, the
    child reports the run ``done`` and only then starts the other coroutines; their step and
    tool messages stay unread in the pipe, and the next session on that process (any run of
    the same plan, e.g. another tenant's) serves them with *its own* step and tools. Here
    tenant A's leftover calls tenant B's ``fetch``, keeps the result in a module global that
    A's next run returns, and plants a step ``x`` in B's journal that B's replay returns."""
    fetched_b: list[str] = []

    def fetch_b(what: str) -> str:
        fetched_b.append(what)
        return "tenant B's secret"

    async with SandboxPool(size=1, max_size=1, limits=LIMITS) as pool:
        tenant_a = engine.register("tenant-a", pool.runner(plan(LEFTOVER), tools={
            "fetch": lambda what: "tenant A's data"}))
        tenant_b = engine.register("tenant-b", pool.runner(plan(LEFTOVER), tools={
            "fetch": fetch_b}))

        async def attack() -> Any:
            details = await wait_for(await tenant_a.create(params="attacker"), *DONE)
            assert details.status == "complete", details.error
            return details.output

        await attack()
        victim = await wait_for(await tenant_b.create(params="victim"), *DONE)
        loot = await attack()
        sleeper = await tenant_b.create(params="victim that sleeps")
        await wait_for(sleeper, "waiting", *DONE, timeout=10)
        await clock.advance(1)
        replayed = await wait_for(sleeper, *DONE, timeout=10)
    problems = []
    if fetched_b != ["sent by B", "sent by B"]:
        problems.append(f"tenant B's fetch was called with {fetched_b}")
    if "tenant B's secret" in repr(loot):
        problems.append(f"tenant A's run returned {loot!r}")
    for details in (victim, replayed):
        if details.status != "complete" or details.output != "tenant B's secret":
            problems.append(f"tenant B's run returned {details.output!r} ({details.error})")
    assert not problems, "; ".join(problems)


async def test_a_finished_run_cannot_break_the_next_plan_in_its_process(
    engine: af.Engine
) -> None:
    """FINDING: the same leftover messages, met by the host while it loads another plan into
    the process, fail that innocent run with ``SandboxCrashed`` (``could not load the plan``).
    """
    async with SandboxPool(size=1, max_size=1, limits=LIMITS) as pool:
        attacker = await start(engine, pool, LEFTOVER, tools={"fetch": lambda what: what},
                               params="attacker")
        assert (await wait_for(attacker, *DONE, timeout=10)).status == "complete"
        await assert_pool_serves(engine, pool)


LEFTOVER_FINALLY = """
    async def run(event, step):
        async def body():
            try:
                return await step.do("inner", lambda: 1)
            finally:
                tools.fetch("from the finally of " + str(event.payload))

        async def fail():
            raise ValueError("end the run now")

        if event.payload == "attacker":
            try:
                await step.all(step.do("outer", body), fail())
            except ValueError:
                pass
            return "attacker done"
        return await step.do("mine", lambda: tools.fetch("sent by B"))
"""


@pytest.mark.parametrize("next_plan", ["same-plan", "other-plan"])
async def test_a_finished_run_cannot_stall_the_next_run_from_a_finally(
    engine: af.Engine, next_plan: str, quiet: None
) -> None:
    """FINDING (host hang, found after the fix of the leftover-run finding): a coroutine of a
    finished run still runs its ``finally`` when the child drops it (``waiting.clear()`` at
    the next ``start``). A tool call there is sent with ``run: None``, the host rightly drops
    it, and the child blocks in ``Channel.call`` waiting for a reply that never comes. The
    next run on that process, of any plan or tenant, never starts and never fails."""
    fetched: list[str] = []

    def fetch(what: str) -> str:
        fetched.append(what)
        return "tenant B's secret"

    async with SandboxPool(size=1, max_size=1, limits=LIMITS) as pool:
        attacker = await start(engine, pool, LEFTOVER_FINALLY, params="attacker",
                               tools={"fetch": lambda what: "tenant A's data"})
        assert (await wait_for(attacker, *DONE, timeout=10)).status == "complete"
        if next_plan == "same-plan":
            victim = await start(engine, pool, LEFTOVER_FINALLY, params="victim",
                                 tools={"fetch": fetch})
            expected: Any = "tenant B's secret"
        else:
            victim = await start(engine, pool, """
                async def run(event, step):
                    return await step.do("o", lambda: "other plan")
            """)
            expected = "other plan"
        details = await wait_for(victim, *DONE, "running", timeout=HANG)
        deadline = time.monotonic() + HANG
        while details.status not in DONE and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
            details = await victim.status()
    assert details.status == "complete" and details.output == expected, (
        f"the next run is {details.status}")
    assert all("finally" not in what for what in fetched), fetched


async def test_tenants_sharing_a_plan_do_not_share_its_globals(engine: af.Engine) -> None:
    """FINDING (cross-tenant leak): the pool keeps warm processes per plan sha256 only, so two
    tenants registering the same source share the plan's module globals in the process: a
    module-level list fills with one tenant's payloads and the other reads them. In-process,
    two ``compile_plan(source).runner()`` calls load the plan twice and share nothing."""
    source = plan("""
        SEEN = []
        async def run(event, step):
            SEEN.append(event.payload)
            return list(SEEN)
    """)
    async with SandboxPool(size=1, max_size=1, limits=LIMITS) as pool:
        tenant_a = engine.register("tenant-a", pool.runner(source))
        tenant_b = engine.register("tenant-b", pool.runner(source))
        first = await wait_for(await tenant_a.create(params="A's secret"), *DONE)
        second = await wait_for(await tenant_b.create(params="B's data"), *DONE)
    assert first.output == ["A's secret"]
    assert second.output == ["B's data"], "tenant B read tenant A's payload"


# -- event payloads ----------------------------------------------------------------------------
async def test_a_deeply_nested_event_payload_does_not_hang_the_run(
    engine: af.Engine, quiet: None
) -> None:
    """FINDING (host hang): ``send_event`` accepts a payload that the engine can encode and
    decode, but the host's reply nests it two levels deeper and ``json.dumps`` raises
    ``RecursionError`` in ``_Session._reply``; the ``_step`` task dies with it and the child
    waits forever (``running``, no CPU, no watchdog). Only some depths just under the
    engine's limit do it, so every accepted depth near the limit is tried."""
    def nest(depth: int) -> Any:
        value: Any = 1
        for _ in range(depth):
            value = [value]
        return value

    source = """
        async def run(event, step):
            got = await step.wait_for_event("w", type="go")
            return "received"
    """
    accepted: list[tuple[int, af.Instance]] = []
    depth = 1000
    async with SandboxPool(size=1, max_size=16, limits=LIMITS) as big_pool:
        for _ in range(12):
            instance = await start(engine, big_pool, source)
            await wait_for(instance, "waiting", timeout=10)
            while True:
                try:
                    await instance.send_event("go", nest(depth))
                    break
                except af.PayloadError:  # deeper than the engine takes
                    depth -= 1
            accepted.append((depth, instance))
            depth -= 1
        stuck = []
        deadline = time.monotonic() + HANG
        for depth, instance in accepted:
            details = await instance.status()
            while details.status not in DONE and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
                details = await instance.status()
            if details.status not in DONE:
                stuck.append(depth)
    assert not stuck, f"runs never finished for payload depths {stuck}"


# -- a malicious child ---------------------------------------------------------------------------
class FakeChildren:
    """Makes the next ``SandboxPool._spawn`` start ``fake_child.py MODE`` instead of the real
    child (later spawns, the replacements, are real again); everything else is the real host
    code."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, sentinel: Path) -> None:
        self.mode: str | None = None
        self.sentinel = sentinel
        self.pools: list[SandboxPool] = []
        real = sandbox._host_pipes.child_command

        def command() -> list[str]:
            argv = real()
            if self.mode is not None:
                argv = [argv[0], "-I", str(FAKE_CHILD), self.mode, str(sentinel)]
                self.mode = None
            return argv

        monkeypatch.setattr(sandbox._host_pipes, "child_command", command)


@pytest.fixture
async def fake(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> AsyncIterator[FakeChildren]:
    children = FakeChildren(monkeypatch, tmp_path / "pwned")
    yield children
    for pool in children.pools:
        await pool.close()
    gc.collect()


PLAN_FOR_FAKES = """
    async def run(event, step):
        return await step.do("a", lambda: tools.spy(1))
"""


async def run_with_fake(engine: af.Engine, fake: FakeChildren, mode: str,
                        spied: list[Any] | None = None,
                        timeout: float = 10.0) -> tuple[af.InstanceDetails, SandboxPool]:
    fake.mode = mode
    pool = await SandboxPool(size=1, max_size=2, limits=LIMITS).start()
    fake.pools.append(pool)
    sink = spied if spied is not None else []

    def spy(*args: Any, **kwargs: Any) -> str:
        sink.append([list(args), kwargs])
        return "spied"

    details = await finish(engine, pool, PLAN_FOR_FAKES, tools={"spy": spy}, timeout=timeout)
    assert not fake.sentinel.exists(), "the host did what a message asked"
    return details, pool


BROKEN_FRAMES = [
    "garbage", "invalid-utf8", "oversized-prefix", "just-over-the-limit", "non-dict",
    "json-string", "missing-op", "op-not-a-string", "truncated-then-exit", "exit-mid-run",
]


@pytest.mark.parametrize("mode", BROKEN_FRAMES)
async def test_a_child_sending_broken_frames_fails_its_run_cleanly(
    engine: af.Engine, fake: FakeChildren, mode: str
) -> None:
    started = time.perf_counter()
    details, pool = await run_with_fake(engine, fake, mode)
    assert details.status == "errored"
    assert error_name(details) == "SandboxCrashed", details.error
    assert time.perf_counter() - started < 10
    await assert_pool_serves(engine, pool)  # the replacement is a real child


async def test_unknown_ops_are_ignored(engine: af.Engine, fake: FakeChildren) -> None:
    spied: list[Any] = []
    details, _ = await run_with_fake(engine, fake, "unknown-ops", spied)
    assert details.status == "complete", details.error
    assert details.output == "finished after the noise"
    assert spied == []


async def test_ungranted_tools_are_refused(engine: af.Engine, fake: FakeChildren) -> None:
    spied: list[Any] = []
    details, _ = await run_with_fake(engine, fake, "ungranted-tools", spied)
    assert details.status == "complete", details.error
    assert spied == []
    for reply in details.output:
        assert reply["value"] is None
        assert reply["error"]["name"] == "AttributeError", reply


async def test_odd_tool_argument_shapes_reach_tools_as_plain_data(
    engine: af.Engine, fake: FakeChildren
) -> None:
    spied: list[Any] = []
    details, _ = await run_with_fake(engine, fake, "hostile-tool-arguments", spied)
    assert details.status == "complete", details.error
    for call in spied:
        assert plain_types(call) <= PLAIN_TYPE_NAMES, call


async def test_unknown_step_methods_are_refused(engine: af.Engine, fake: FakeChildren) -> None:
    details, _ = await run_with_fake(engine, fake, "unknown-step-methods")
    assert details.status == "complete", details.error
    for reply in details.output:
        assert reply["error"]["name"] == "AttributeError", reply


async def test_a_nan_output_is_refused(engine: af.Engine, fake: FakeChildren) -> None:
    details, _ = await run_with_fake(engine, fake, "done-with-nan")
    assert details.status == "errored" and error_name(details) == "PayloadError"


FAILURE_NAMES = {
    "failed-as-system-exit": {"SystemExit"},
    "failed-as-keyboard-interrupt": {"KeyboardInterrupt"},
    "failed-as-generator-exit": {"GeneratorExit"},
    "failed-as-cancelled-error": {"CancelledError"},
    "failed-as-base-exception": {"BaseException"},
    "failed-as-stop-iteration": {"RuntimeError", "StopIteration"},
    "failed-as-odd-name": {"PlanFailed"},
}


@pytest.mark.parametrize("mode", list(FAILURE_NAMES))
async def test_a_failure_name_cannot_raise_a_base_exception_in_the_host(
    engine: af.Engine, fake: FakeChildren, mode: str
) -> None:
    """The child names the error class; the host must raise an ordinary ``Exception``
    (never ``SystemExit``, ``KeyboardInterrupt``, ``CancelledError``... which would stop the
    worker or be mistaken for the engine's own control flow)."""
    details, _ = await run_with_fake(engine, fake, mode)
    assert details.status == "errored"
    assert error_name(details) in FAILURE_NAMES[mode], details.error


@pytest.mark.parametrize("name", [
    "SystemExit", "KeyboardInterrupt", "GeneratorExit", "BaseException", "CancelledError",
    "BaseExceptionGroup", "StopIteration", "StopAsyncIteration", "object", "type",
    "print", "__import__", "", "None", "a b", "Warning", "OSError",
])
def test_plan_errors_are_ordinary_exceptions(name: str) -> None:
    error = sandbox.process.plan_error({"name": name, "message": "from the child"})
    assert isinstance(error, Exception)
    assert not isinstance(error, (SystemExit, KeyboardInterrupt, GeneratorExit,
                                  asyncio.CancelledError))


@pytest.mark.parametrize("mode", [
    "step-without-call", "tool-without-call",
    "step-with-a-body-but-no-call", "tool-with-a-body-but-no-call",
])
async def test_a_request_without_a_call_id_does_not_hang_the_run(
    engine: af.Engine, fake: FakeChildren, mode: str, quiet: None
) -> None:
    """FINDING (host hang): a ``step`` or ``tool`` message without ``call`` makes the host's
    task die with ``KeyError`` when it replies; nothing fails the run, so it stays
    ``running`` forever and holds its sandbox process. (The protocol check added since
    accepts an integer ``body`` in place of ``call``, so the ``with-a-body`` variants still
    hang.)"""
    fake.mode = mode
    async with SandboxPool(size=1, max_size=2, limits=LIMITS) as pool:
        instance = await start(engine, pool, PLAN_FOR_FAKES, tools={"spy": lambda x: x})
        details = await wait_for(instance, *DONE, timeout=HANG)
    assert details.status == "errored" and error_name(details) == "SandboxCrashed"


@pytest.mark.parametrize("mode", [
    "body-result-with-bad-id", "speculative-step-with-bad-body", "failed-with-a-string-error",
])
async def test_malformed_fields_fail_the_run_as_a_crash(
    engine: af.Engine, fake: FakeChildren, mode: str
) -> None:
    details, _ = await run_with_fake(engine, fake, mode)
    assert details.status == "errored"
    assert error_name(details) == "SandboxCrashed", details.error
