"""Shared fixtures: a real SQLite file per test, a fake clock, and helpers that drive time."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

import agentflow as af


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "agentflow.db"


@pytest.fixture
def db_url(db_path: Path) -> str:
    return f"sqlite:///{db_path}"


@pytest.fixture
def clock() -> af.FakeClock:
    return af.FakeClock()


@pytest.fixture
async def engine(db_url: str, clock: af.FakeClock) -> AsyncIterator[af.Engine]:
    async with af.Engine.open(db_url, clock=clock, poll_interval=0.05) as engine:
        yield engine


async def wait_for(
    instance: af.Instance, *statuses: str, timeout: float = 5.0
) -> af.InstanceDetails:
    """Real-time wait until the instance reaches one of ``statuses``."""
    async def poll() -> af.InstanceDetails:
        while True:
            details = await instance.status()
            if details.status in statuses:
                return details
            await asyncio.sleep(0.005)

    try:
        return await asyncio.wait_for(poll(), timeout)
    except TimeoutError:
        details = await instance.status()
        raise AssertionError(
            f"{instance!r} is {details.status} (error {details.error}), not {statuses}"
        ) from None


async def next_wake(engine: af.Engine) -> float | None:
    return await engine._storage.next_wake(list(engine._workflows))


async def drive(
    engine: af.Engine, clock: af.FakeClock, instance: af.Instance, *, max_wakes: int = 100,
    timeout: float = 10.0,
) -> af.InstanceDetails:
    """Run ``instance`` to the end, jumping the fake clock to each timer it waits for."""
    for _ in range(max_wakes):
        details = await wait_for(
            instance, "complete", "errored", "terminated", "waiting", "paused", timeout=timeout
        )
        if details.status != "waiting":
            return details
        when = await next_wake(engine)
        if when is None:
            return details
        runs = await _runs(engine, instance)
        await clock.set(when)
        await _until_woken(engine, instance, runs, timeout)
    raise AssertionError(f"{instance!r} still waiting after {max_wakes} wakes")


async def _runs(engine: af.Engine, instance: af.Instance) -> int:
    row = await engine._storage.get_instance_by_iid(instance._iid)
    assert row is not None
    return row.runs


async def _until_woken(
    engine: af.Engine, instance: af.Instance, runs: int, timeout: float
) -> None:
    async def poll() -> None:
        while await _runs(engine, instance) <= runs:
            await asyncio.sleep(0.002)

    await asyncio.wait_for(poll(), timeout)


def rows(db_path: Path, sql: str, *args: object) -> list[tuple[object, ...]]:
    """Read the database file directly, as another process would."""
    with sqlite3.connect(db_path) as conn:
        return conn.execute(sql, args).fetchall()


Counter = Callable[[], int]


def counter() -> tuple[dict[str, int], Callable[[str], None]]:
    calls: dict[str, int] = {}

    def hit(name: str) -> None:
        calls[name] = calls.get(name, 0) + 1

    return calls, hit
