"""step.do: journaling, occurrence counts, contexts, retries, backoff, timeouts, errors."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pydantic
import pytest

import agentflow as af
from tests.conftest import counter, drive, rows, wait_for


async def test_result_is_journaled_and_not_recomputed_on_replay(
    engine: af.Engine, clock: af.FakeClock, db_path: Any
) -> None:
    calls, hit = counter()

    async def run(event: af.Event, step: af.Step) -> list[int]:
        first = await step.do("value", lambda: hit("value") or 41)
        await step.sleep("pause", "1 hour")  # forces a replay from the top
        second = await step.do("value", lambda: hit("value") or 1)
        return [first, second]

    instance = await engine.register("wf", run).create()
    details = await drive(engine, clock, instance)
    assert details.output == [41, 1]
    # Two occurrences of the same name, each run exactly once despite the replay.
    assert calls == {"value": 2}
    journal = rows(db_path, "SELECT name, count, state FROM steps WHERE kind = 'do' ORDER BY seq")
    assert journal == [("value", 1, "completed"), ("value", 2, "completed")]


async def test_results_come_back_as_json_values_live_and_on_replay(
    engine: af.Engine, clock: af.FakeClock
) -> None:
    class Model(pydantic.BaseModel):
        name: str
        size: int

    seen: list[Any] = []

    async def run(event: af.Event, step: af.Step) -> Any:
        model = await step.do("model", lambda: Model(name="x", size=3))
        pair = await step.do("tuple", lambda: (1, 2))
        seen.append((model, pair))
        await step.sleep("s", 10)
        return model

    instance = await engine.register("wf", run).create()
    details = await drive(engine, clock, instance)
    assert details.output == {"name": "x", "size": 3}
    # Identical types before and after the replay: the decoded journal value both times.
    assert seen == [({"name": "x", "size": 3}, [1, 2])] * 2


async def test_sync_async_and_context_taking_bodies(engine: af.Engine) -> None:
    async def fetch(n: int) -> int:
        await asyncio.sleep(0)
        return n * 2

    async def with_ctx(ctx: af.StepContext) -> dict[str, Any]:
        return {"name": ctx.name, "count": ctx.count, "attempt": ctx.attempt,
                "timeout": ctx.config.timeout, "limit": ctx.config.retries.limit}

    async def run(event: af.Event, step: af.Step) -> list[Any]:
        return [
            await step.do("sync", lambda: 1),
            await step.do("lambda returning coroutine", lambda: fetch(2)),
            await step.do("coroutine function", with_ctx),
            await step.do("coroutine function", with_ctx, timeout="5 seconds"),
            await step.do("sync ctx", lambda ctx: ctx.attempt),
        ]

    instance = await engine.register("wf", run).create()
    details = await wait_for(instance, "complete")
    assert details.output == [
        1, 4,
        {"name": "coroutine function", "count": 1, "attempt": 1, "timeout": 600.0, "limit": 5},
        {"name": "coroutine function", "count": 2, "attempt": 1, "timeout": 5.0, "limit": 5},
        1,
    ]


@pytest.mark.parametrize(
    ("backoff", "expected"),
    [("constant", [3, 3, 3]), ("linear", [3, 6, 9]), ("exponential", [3, 6, 12])],
)
async def test_retry_backoff_waits_in_clock_time(
    engine: af.Engine, clock: af.FakeClock, backoff: str, expected: list[int]
) -> None:
    attempts: list[float] = []

    def flaky(ctx: af.StepContext) -> str:
        attempts.append(clock.now())
        if ctx.attempt <= 3:
            raise ConnectionError(f"attempt {ctx.attempt}")
        return "ok"

    async def run(event: af.Event, step: af.Step) -> str:
        retries = af.Retries(limit=3, delay="3 seconds", backoff=backoff)  # type: ignore[arg-type]
        return await step.do("flaky", flaky, retries=retries)

    instance = await engine.register("wf", run).create()
    details = await drive(engine, clock, instance)
    assert details.output == "ok"
    gaps = [round(b - a) for a, b in itertools.pairwise(attempts)]
    assert gaps == expected


async def test_retry_delay_may_be_a_function_of_context_and_error(
    engine: af.Engine, clock: af.FakeClock
) -> None:
    attempts: list[float] = []

    def flaky(ctx: af.StepContext) -> int:
        attempts.append(clock.now())
        if ctx.attempt < 3:
            raise ValueError(str(ctx.attempt * 100))
        return ctx.attempt

    def delay(ctx: af.StepContext, error: BaseException) -> float:
        return float(str(error))  # the error says how long to wait

    async def run(event: af.Event, step: af.Step) -> int:
        return await step.do("f", flaky, retries=af.Retries(limit=5, delay=delay))

    instance = await engine.register("wf", run).create()
    assert (await drive(engine, clock, instance)).output == 3
    assert [round(b - a) for a, b in itertools.pairwise(attempts)] == [100, 200]


async def test_exhausted_retries_journal_the_error_and_replay_raises_it_without_running(
    engine: af.Engine, clock: af.FakeClock
) -> None:
    calls, hit = counter()

    def always_fails() -> None:
        hit("fail")
        raise KeyError("missing thing")

    caught: list[tuple[str, str]] = []

    async def run(event: af.Event, step: af.Step) -> str:
        try:
            await step.do("fail", always_fails, retries=af.Retries(limit=2, delay=0))
        except KeyError as exc:
            caught.append((type(exc).__name__, str(exc)))
        await step.sleep("later", "1 day")
        return "went on"

    instance = await engine.register("wf", run).create()
    details = await drive(engine, clock, instance)
    assert details.output == "went on"
    assert calls == {"fail": 3}  # limit counts retries: 1 + 2 attempts, none on replay
    assert caught[0] == caught[1] == ("KeyError", str(KeyError("missing thing")))


async def test_non_retryable_error_stops_at_once_and_errors_the_instance(
    engine: af.Engine,
) -> None:
    calls, hit = counter()

    def refuse() -> None:
        hit("refuse")
        raise af.NonRetryableError("card declined")

    async def run(event: af.Event, step: af.Step) -> None:
        await step.do("charge", refuse, retries=af.Retries(limit=5, delay="1 second"))

    instance = await engine.register("wf", run).create()
    details = await wait_for(instance, "errored")
    assert calls == {"refuse": 1}
    assert details.error == af.ErrorInfo("NonRetryableError", "card declined")


async def test_unknown_exception_types_replay_under_their_name(
    engine: af.Engine, clock: af.FakeClock
) -> None:
    class LocalOnly(Exception):
        def __init__(self, code: int, text: str) -> None:
            super().__init__(f"{code}: {text}")

    seen: list[tuple[str, str, bool]] = []

    def boom() -> None:
        raise LocalOnly(7, "nope")

    async def run(event: af.Event, step: af.Step) -> None:
        try:
            await step.do("boom", boom, retries=af.Retries(limit=0))
        except Exception as exc:
            seen.append((type(exc).__name__, str(exc), isinstance(exc, af.StepError)))
        await step.sleep("s", 1)

    instance = await engine.register("wf", run).create()
    await drive(engine, clock, instance)
    assert seen[0][:2] == seen[1][:2] == ("LocalOnly", "7: nope")
    assert seen[1][2], "a class that cannot be rebuilt comes back as a StepError subclass"


async def test_attempt_timeout_raises_workflow_timeout_error_and_retries(
    engine: af.Engine, clock: af.FakeClock
) -> None:
    async def hang(ctx: af.StepContext) -> str:
        if ctx.attempt == 1:
            await asyncio.Event().wait()
        return f"attempt {ctx.attempt}"

    async def run(event: af.Event, step: af.Step) -> str:
        return await step.do("hang", hang, timeout="30 seconds",
                             retries=af.Retries(limit=1, delay=0))

    instance = await engine.register("wf", run).create()
    await wait_for(instance, "running")
    await asyncio.sleep(0.05)
    await clock.advance(31)
    details = await wait_for(instance, "complete")
    assert details.output == "attempt 2"
    failed = [e async for e in instance.events(follow=False) if e.type == "attempt.failed"]
    assert failed[0].data["error"]["name"] == "WorkflowTimeoutError"


async def test_timeout_without_retries_errors_the_instance(
    engine: af.Engine, clock: af.FakeClock
) -> None:
    async def run(event: af.Event, step: af.Step) -> None:
        await step.do("hang", lambda: asyncio.Event().wait(), timeout=5,
                      retries=af.Retries(limit=0))

    instance = await engine.register("wf", run).create()
    await wait_for(instance, "running")
    await asyncio.sleep(0.05)
    await clock.advance(6)
    details = await wait_for(instance, "errored")
    assert details.error is not None and details.error.name == "WorkflowTimeoutError"


async def test_a_timeout_error_raised_by_the_body_is_not_mistaken_for_the_deadline(
    engine: af.Engine,
) -> None:
    async def body() -> None:
        raise TimeoutError("upstream took too long")

    async def run(event: af.Event, step: af.Step) -> None:
        await step.do("x", body, retries=af.Retries(limit=0))

    details = await wait_for(await engine.register("wf", run).create(), "errored")
    assert details.error == af.ErrorInfo("TimeoutError", "upstream took too long")


async def test_async_bodies_that_wait_or_not_give_their_results_and_errors(
    engine: af.Engine, clock: af.FakeClock
) -> None:
    """A coroutine body runs eagerly to its first wait; what it returns or raises, before or
    after waiting, and a deadline that cancels it mid-wait, are the same as when awaited."""
    cleaned: list[str] = []

    async def at_once() -> str:
        return "no wait"

    async def fails_at_once() -> None:
        raise ValueError("before any wait")

    async def waits_often() -> int:
        total = 0
        for n in range(5):
            await asyncio.sleep(0)
            total += n
        return total

    async def fails_after_waiting() -> None:
        await asyncio.sleep(0)
        raise KeyError("after a wait")

    async def hangs() -> None:
        try:
            await asyncio.sleep(0)
            await asyncio.Event().wait()
        finally:
            cleaned.append("hangs")

    async def run(event: af.Event, step: af.Step) -> list[Any]:
        out: list[Any] = [await step.do("a", at_once), await step.do("b", waits_often)]
        for name, body in (("c", fails_at_once), ("d", fails_after_waiting)):
            try:
                await step.do(name, body, retries=af.Retries(limit=0))
            except Exception as exc:
                out.append(f"{type(exc).__name__}: {exc}")
        try:
            await step.do("e", hangs, timeout=5, retries=af.Retries(limit=0))
        except af.WorkflowTimeoutError as exc:
            out.append(str(exc))
        return out

    instance = await engine.register("wf", run).create()
    await wait_for(instance, "running")
    await asyncio.sleep(0.05)
    await clock.advance(6)
    details = await wait_for(instance, "complete")
    assert details.output == [
        "no wait", 10, "ValueError: before any wait", "KeyError: 'after a wait'",
        "step 'e' attempt 1 timed out after 5 seconds",
    ]
    assert cleaned == ["hangs"]


async def test_parallel_steps_run_concurrently_with_results_in_argument_order(
    engine: af.Engine, clock: af.FakeClock
) -> None:
    running = 0
    peak = 0

    async def work(n: int) -> int:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.01 * (5 - n))
        running -= 1
        return n

    async def run(event: af.Event, step: af.Step) -> dict[str, list[int]]:
        via_all = await step.all(*(step.do(f"all {n}", lambda n=n: work(n)) for n in range(5)))
        via_gather = await asyncio.gather(*(step.do("g", lambda n=n: work(n)) for n in range(5)))
        await step.sleep("s", 1)
        return {"all": via_all, "gather": list(via_gather)}

    instance = await engine.register("wf", run).create()
    details = await drive(engine, clock, instance)
    assert details.output == {"all": [0, 1, 2, 3, 4], "gather": [0, 1, 2, 3, 4]}
    assert peak == 5


async def test_a_sibling_step_finishes_and_is_journaled_when_another_branch_sleeps(
    engine: af.Engine, clock: af.FakeClock
) -> None:
    calls, hit = counter()

    async def slow() -> str:
        await asyncio.sleep(0.05)
        hit("slow")
        return "done"

    async def run(event: af.Event, step: af.Step) -> list[Any]:
        return await step.all(step.do("slow", slow), step.sleep("nap", "1 minute"))

    instance = await engine.register("wf", run).create()
    details = await drive(engine, clock, instance)
    assert details.output == ["done", None]
    assert calls == {"slow": 1}
