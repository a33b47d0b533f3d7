"""The collector's young-generation threshold while an engine's worker runs (``tune_gc``)."""

from __future__ import annotations

import asyncio
import gc
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

import agentflow as af

DEFAULT = (700, 10, 10)


@pytest.fixture(autouse=True)
def interpreter_default() -> Iterator[None]:
    saved = gc.get_threshold()
    gc.set_threshold(*DEFAULT)
    yield
    gc.set_threshold(*saved)


async def one_step(event: af.Event, step: af.Step) -> int:
    return int(await step.do("a", lambda: 1))


async def test_a_worker_raises_the_default_threshold_until_it_closes(db_url: str) -> None:
    async with af.Engine.open(db_url) as engine:
        assert gc.get_threshold() == (100_000, 10, 10)
        instance = await engine.register("wf", one_step).create()
        assert (await instance.wait(timeout=10)).output == 1
    assert gc.get_threshold() == DEFAULT


async def test_tune_gc_false_and_engines_without_a_worker_leave_it_alone(db_url: str) -> None:
    async with af.Engine.open(db_url, tune_gc=False):
        assert gc.get_threshold() == DEFAULT
    async with af.Engine.open(db_url, worker=False):
        assert gc.get_threshold() == DEFAULT


async def test_a_threshold_the_process_chose_is_kept(db_url: str) -> None:
    gc.set_threshold(2_000, 5, 5)
    async with af.Engine.open(db_url):
        assert gc.get_threshold() == (2_000, 5, 5)
    assert gc.get_threshold() == (2_000, 5, 5)


async def test_the_last_engine_to_close_restores_it(db_url: str) -> None:
    first = await af.Engine.open(db_url)
    second = await af.Engine.open(db_url)
    await first.close()
    assert gc.get_threshold()[0] == 100_000  # the second still runs
    await second.close()
    assert gc.get_threshold() == DEFAULT
    await second.close()  # closing twice releases once
    assert gc.get_threshold() == DEFAULT


async def test_a_change_made_while_it_runs_is_not_undone(db_url: str) -> None:
    async with af.Engine.open(db_url):
        gc.set_threshold(5_000, 10, 10)
    assert gc.get_threshold() == (5_000, 10, 10)


def test_tune_gc_must_be_a_bool() -> None:
    with pytest.raises(af.InvalidArgumentError, match="tune_gc must be True or False"):
        af.Engine.open("sqlite:///unused.db", tune_gc="yes")


async def test_a_close_that_is_cancelled_or_fails_still_restores_it(db_path: Path) -> None:
    engine = await af.Engine.open(f"sqlite:///{db_path}")
    closing = asyncio.ensure_future(engine.close())
    await asyncio.sleep(0)  # inside the worker's close
    closing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await closing
    assert gc.get_threshold() == DEFAULT

    engine = await af.Engine.open(f"sqlite:///{db_path}")
    engine._storage._db._lock_timeout = 0.2  # type: ignore[attr-defined]
    other = sqlite3.connect(db_path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    try:
        with pytest.raises(af.StorageError):
            await engine.close()  # the worker's release times out
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert gc.get_threshold() == DEFAULT
