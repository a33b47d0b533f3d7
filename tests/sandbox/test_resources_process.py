"""Resource attacks on sandbox processes: each fails only its own instance, within its budget
(``Limits(cpu_seconds=0.5)``, 512 MiB of address space), while a benign instance running at
the same time completes, and the pool goes on serving plans.

In-process plans have no such limits (see ``sandbox.plan``); these attacks are for the process
mode only.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

import agentflow as af
from sandbox.process import Limits, SandboxPool
from tests.conftest import wait_for
from tests.sandbox._harness import plan

LIMITS = Limits(cpu_seconds=0.5)
DONE = ("complete", "errored", "terminated")
CPU = {"SandboxLimitError"}
MEMORY = {"MemoryError"}
EITHER = {"MemoryError", "SandboxLimitError"}

BOMBS: dict[str, tuple[str, set[str]]] = {
    "endless-loop": ("""
        async def run(event, step):
            while True:
                pass
    """, CPU),
    "endless-loop-in-a-step": ("""
        def spin():
            while True:
                pass
        async def run(event, step):
            return await step.do("spin", spin, retries={"limit": 0})
    """, CPU),
    "endless-loop-swallowing-errors": ("""
        async def run(event, step):
            while True:
                try:
                    1 / 0
                except Exception:
                    pass
    """, CPU),
    "endless-loop-after-a-step": ("""
        async def run(event, step):
            n = await step.do("first", lambda: 1)
            while n:
                n += 1
    """, CPU),
    "string-multiplication": ("""
        async def run(event, step):
            return len("x" * (10 ** 10))
    """, MEMORY),
    "bytes-multiplication": ("""
        async def run(event, step):
            return len(b"x" * (10 ** 10))
    """, MEMORY),
    "string-doubling": ("""
        async def run(event, step):
            s = "x"
            while True:
                s = s + s
    """, EITHER),
    "list-multiplication": ("""
        async def run(event, step):
            return len([0] * (10 ** 9))
    """, MEMORY),
    "list-of-a-range": ("""
        async def run(event, step):
            return len(list(range(10 ** 8)))
    """, MEMORY),
    "nested-comprehension": ("""
        async def run(event, step):
            return len([[j for j in range(10 ** 4)] for i in range(10 ** 4)])
    """, EITHER),
    "itertools-count-into-a-list": ("""
        import itertools
        async def run(event, step):
            return len(list(itertools.count()))
    """, EITHER),
    "itertools-count-into-a-deque": ("""
        import collections
        import itertools
        async def run(event, step):
            return len(collections.deque(itertools.count()))
    """, EITHER),
    "itertools-product": ("""
        import itertools
        async def run(event, step):
            return len(list(itertools.product(range(100), repeat=10)))
    """, EITHER),
    "itertools-permutations": ("""
        import itertools
        async def run(event, step):
            return len(list(itertools.permutations(range(12))))
    """, EITHER),
    "growing-dict": ("""
        async def run(event, step):
            d = {}
            i = 0
            while True:
                d[i] = str(i) * 10
                i += 1
    """, EITHER),
    "sorted-huge-range": ("""
        async def run(event, step):
            return len(sorted(range(10 ** 9)))
    """, MEMORY),
    "regex-backtracking": ("""
        import re
        async def run(event, step):
            return bool(re.match("(a+)+$", "a" * 40 + "b"))
    """, CPU),
    "regex-substitution-amplification": ("""
        import re
        async def run(event, step):
            return len(re.sub("", "x" * 1000, "y" * 1000000))
    """, MEMORY),
    "str-replace-amplification": ("""
        async def run(event, step):
            return len(("a" * 100000).replace("a", "b" * 100000))
    """, MEMORY),
    "ljust-width": ("""
        async def run(event, step):
            return len("x".ljust(10 ** 10))
    """, MEMORY),
    "percent-format-width": ("""
        async def run(event, step):
            return len("%*d" % (10 ** 10, 1))
    """, MEMORY),
    "huge-power": ("""
        async def run(event, step):
            return 10 ** (10 ** 9) > 1
    """, EITHER),
    "math-factorial": ("""
        import math
        async def run(event, step):
            return math.factorial(10 ** 7) > 1
    """, CPU),
    "math-comb": ("""
        import math
        async def run(event, step):
            return math.comb(10 ** 7, 5 * 10 ** 6) > 1
    """, CPU),
    "huge-int-to-str": ("""
        async def run(event, step):
            return str(10 ** 5000)
    """, {"ValueError"}),
    "recursion": ("""
        def f(n):
            return f(n + 1)
        async def run(event, step):
            return f(0)
    """, {"RecursionError"}),
    "recursion-in-a-step": ("""
        def f(n):
            return g(n + 1)
        def g(n):
            return f(n + 1)
        async def run(event, step):
            return await step.do("r", lambda: f(0), retries={"limit": 0})
    """, {"RecursionError"}),
    "json-nesting": ("""
        import json
        async def run(event, step):
            return json.loads("[" * 1000000 + "]" * 1000000)
    """, {"RecursionError"}),
    # Module level may hold constants, and ``**`` or ``*`` of constants is not a call: the
    # module is executed for every run (fresh globals), in the sandbox process.
    "module-level-power": ("""
        X = 10 ** (10 ** 9) > 1
        async def run(event, step):
            return X
    """, CPU),
    "module-level-string": ("""
        X = "x" * (10 ** 10)
        async def run(event, step):
            return len(X)
    """, {"MemoryError", "SandboxCrashed"}),
    "module-level-list": ("""
        X = [0] * (10 ** 8)
        async def run(event, step):
            return len(X)
    """, {"MemoryError", "SandboxCrashed"}),
    "memory-bomb-in-a-step": ("""
        import random
        async def run(event, step):
            return await step.do("s", lambda: len(random.sample(range(10 ** 12), 10 ** 8)),
                                 retries={"limit": 0})
    """, EITHER),
}


@pytest.fixture
async def pool() -> AsyncIterator[SandboxPool]:
    async with SandboxPool(size=2, max_size=4, limits=LIMITS) as pool:
        yield pool


BENIGN = plan("""
    async def run(event, step):
        total = 0
        for i in range(8):
            total += await step.do("tick", lambda: tools.tick(i))
        return total
""")


QUICK = """
    async def run(event, step):
        return await step.do("quick", lambda: "served")
"""


async def _tick(i: int) -> int:
    await asyncio.sleep(0.01)
    return i


def register(engine: af.Engine, pool: SandboxPool, name: str,
             source: str) -> af.WorkflowBinding:
    return engine.register(name, pool.runner(plan(source), tools={"tick": _tick}))


@pytest.mark.parametrize("bomb", list(BOMBS), ids=list(BOMBS))
async def test_a_bomb_fails_only_its_instance(
    engine: af.Engine, pool: SandboxPool, bomb: str
) -> None:
    source, errors = BOMBS[bomb]
    benign = await register(engine, pool, "benign", BENIGN).create()
    started = time.perf_counter()
    guilty = await register(engine, pool, "bomb", source).create()
    details = await wait_for(guilty, *DONE, timeout=20)
    elapsed = time.perf_counter() - started
    assert details.status == "errored", details
    assert details.error is not None and details.error.name in errors, details.error
    # The budget is 0.5 s of CPU, checked every 0.05 s; allow for a busy machine.
    assert elapsed < 10, f"took {elapsed:.1f} s to fail"
    done = await wait_for(benign, *DONE, timeout=20)
    assert done.status == "complete" and done.output == sum(range(8)), done.error
    again = await register(engine, pool, "after", QUICK).create()
    assert (await wait_for(again, *DONE, timeout=20)).output == "served"


async def test_every_bomb_at_once_alongside_benign_instances(engine: af.Engine) -> None:
    async with SandboxPool(size=2, max_size=len(BOMBS) + 4, limits=LIMITS) as pool:
        benign = register(engine, pool, "benign", BENIGN)
        good = [await benign.create() for _ in range(3)]
        guilty = {
            name: await register(engine, pool, f"bomb-{n}", source).create()
            for n, (name, (source, _)) in enumerate(BOMBS.items())
        }
        good += [await benign.create() for _ in range(3)]
        for name, instance in guilty.items():
            details = await wait_for(instance, *DONE, timeout=60)
            assert details.status == "errored", (name, details)
            assert details.error is not None and details.error.name in BOMBS[name][1], (
                name, details.error)
        for instance in good:
            details = await wait_for(instance, *DONE, timeout=60)
            assert details.status == "complete" and details.output == sum(range(8)), details
        assert pool._count <= pool.max_size


PRINT_FLOODS = {
    "short-lines": ("x", 100, 20000),
    "long-lines": ("x", 100_000, 200),
    "non-ascii": ("\u00e9", 50_000, 200),
}


@pytest.mark.parametrize("flood", list(PRINT_FLOODS), ids=list(PRINT_FLOODS))
async def test_a_print_flood_is_bounded_in_the_log(
    engine: af.Engine, pool: SandboxPool, flood: str
) -> None:
    char, width, lines = PRINT_FLOODS[flood]
    instance = await register(engine, pool, "printer", f"""
        async def run(event, step):
            line = {char!r} * {width}
            for i in range({lines}):
                print(line, i)
            await step.do("after", lambda: 1)
            for i in range({lines}):
                print("again", i)
            return "done"
    """).create()
    details = await wait_for(instance, *DONE, timeout=20)
    assert details.status == "complete" and details.output == "done", details.error
    logged = [e.data["text"] async for e in instance.events(follow=False)
              if e.type == "instance.log"]
    size = sum(len(t.encode()) for t in logged)
    assert size <= 65 * 1024, f"{size} bytes of log"
    assert logged and logged[-1].rstrip().endswith("truncated]")


async def test_the_cpu_budget_is_per_run_not_per_process(
    engine: af.Engine, pool: SandboxPool
) -> None:
    """Many runs of a plan that each use a little CPU in a warm process: no run is charged
    for the ones before it."""
    workflow = register(engine, pool, "busy", """
        async def run(event, step):
            total = 0
            for i in range(300000):
                total += i
            return await step.do("t", lambda: total)
    """)
    for _ in range(12):
        details = await wait_for(await workflow.create(), *DONE, timeout=20)
        assert details.status == "complete", details.error


def test_an_allocation_that_failed_without_an_exception_is_reported_as_out_of_memory() -> None:
    # Under the address-space limit, filling a deque from an endless iterator can end in
    # CPython's "returned NULL without setting an exception": the plan ran out of memory.
    from sandbox._child_channel import error_info

    lost = SystemError("<class 'collections.deque'> returned NULL without setting an exception")
    info = error_info(lost)
    assert info["name"] == "MemoryError"
    assert "ran out of memory" in info["message"] and "collections.deque" in info["message"]
    assert error_info(SystemError("something else"))["name"] == "SystemError"
