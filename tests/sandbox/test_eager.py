"""sandbox.eager: coroutines run at once up to their first wait, the rest as a task."""

from __future__ import annotations

import asyncio
import contextvars

import pytest

from sandbox.eager import spawn

VAR: contextvars.ContextVar[str] = contextvars.ContextVar("VAR", default="outside")


async def test_a_coroutine_that_never_waits_runs_at_once_without_a_task() -> None:
    ran: list[str] = []

    async def quick() -> None:
        ran.append(VAR.get())
        VAR.set("changed inside")  # in its own copy of the context

    VAR.set("caller")
    assert spawn(quick()) is None
    assert ran == ["caller"]
    assert VAR.get() == "caller"


async def test_a_coroutine_that_waits_continues_as_a_task_in_its_context() -> None:
    steps: list[str] = []
    gate = asyncio.Event()

    async def slow() -> None:
        VAR.set("inside")
        steps.append("before")
        await gate.wait()
        steps.append(f"after {VAR.get()}")

    task = spawn(slow())
    assert task is not None and steps == ["before"]  # the first part ran in the call
    gate.set()
    await task
    assert steps == ["before", "after inside"]
    assert VAR.get() == "outside"


async def test_the_rest_of_a_spawned_coroutine_can_be_cancelled_and_cleans_up() -> None:
    cleaned: list[str] = []

    async def waits_forever() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            cleaned.append("finally")

    task = spawn(waits_forever())
    assert task is not None
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cleaned == ["finally"]


async def test_errors_after_the_first_wait_are_the_tasks() -> None:
    async def fails_later() -> None:
        await asyncio.sleep(0)
        raise ValueError("later")

    task = spawn(fails_later())
    assert task is not None
    with pytest.raises(ValueError, match="later"):
        await task
