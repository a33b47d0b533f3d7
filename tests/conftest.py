"""Shared fixtures: a real SQLite file per test, a fake clock, and helpers that drive time."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

import agentflow as af


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "agentflow.db"


@pytest.fixture
def db_url(db_path: Path) -> Iterator[str]:
    """The test's database: a SQLite file, or with AGENTFLOW_TEST_BACKEND=postgres a fresh
    database on the server in AGENTFLOW_TEST_PG_URL (tests that read the SQLite file
    directly skip there)."""
    if os.environ.get("AGENTFLOW_TEST_BACKEND") != "postgres":
        yield f"sqlite:///{db_path}"
        return
    from tests.storage.conftest import PostgresBackend

    backend = PostgresBackend(db_path.parent)
    _PG_URLS[db_path] = backend.url
    os.environ[DB_URL_VARIABLE] = backend.url  # for the worker processes tests start
    yield backend.url
    os.environ.pop(DB_URL_VARIABLE, None)
    _PG_URLS.pop(db_path, None)
    backend.cleanup()


DB_URL_VARIABLE = "AGENTFLOW_TEST_DB_URL"  # set while a test runs on PostgreSQL
_PG_URLS: dict[Path, str] = {}  # db_path -> the PostgreSQL database standing in for it


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
    """Read the database file directly, as another process would (on PostgreSQL: the
    test's database, with the same SQL)."""
    if db_path in _PG_URLS:
        import psycopg

        with psycopg.connect(_PG_URLS[db_path]) as pg:
            sql = sql.replace("%", "%%").replace("?", "%s")
            return [tuple(r) for r in pg.execute(sql, args).fetchall()]
    with sqlite3.connect(db_path) as conn:
        return conn.execute(sql, args).fetchall()


Counter = Callable[[], int]


def counter() -> tuple[dict[str, int], Callable[[str], None]]:
    calls: dict[str, int] = {}

    def hit(name: str) -> None:
        calls[name] = calls.get(name, 0) + 1

    return calls, hit


def terminated_first(
    monkeypatch: pytest.MonkeyPatch, engine: af.Engine, method: str, instance: af.Instance,
) -> None:
    """Make the storage's ``method`` terminate ``instance`` before it writes: a write that
    raced the instance's end (its caller saw it running)."""
    storage = engine._storage
    write = getattr(storage, method)

    async def racing(*args: object, **kwargs: object) -> object:
        await instance.terminate()
        return await write(*args, **kwargs)

    monkeypatch.setattr(storage, method, racing)

