"""What the SQLite store does that the protocol does not ask of every store: telling an
engine whether other connections wrote, and claims that take no write lock when idle."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import agentflow as af
from agentflow.storage import SqliteStorage


@asynccontextmanager
async def _store(path: Path, *instances: str) -> AsyncIterator[SqliteStorage]:
    """An open store on ``path`` with queued ``instances`` of workflow 'wf'."""
    store = SqliteStorage(path)
    await store.open()
    try:
        if instances:
            await store.create_instances("wf", [(id, None) for id in instances], 1.0,
                                         skip_existing=False)
        yield store
    finally:
        await store.close()


async def test_the_data_version_moves_for_other_connections_commits_not_its_own(
    tmp_path: Path,
) -> None:
    # An engine's waiters skip their poll when nothing but the engine itself wrote.
    path = tmp_path / "a.db"
    async with _store(path) as store:
        first = store.data_version()
        assert first is not None
        await store.create_instances("wf", [("mine", None)], 1.0, skip_existing=False)
        assert store.data_version() == first
        other = sqlite3.connect(path)
        other.execute("UPDATE instances SET updated_at = 2.0")
        other.commit()
        other.close()
        second = store.data_version()
        assert second is not None and second != first
        assert store.data_version() == second  # (until the next one)
    assert store.data_version() is None  # closed: the caller must look for itself


async def test_a_claim_with_nothing_to_take_leaves_the_write_lock_alone(
    tmp_path: Path,
) -> None:
    # Idle workers poll with claims: they must not queue behind (or hold) the write lock.
    path = tmp_path / "a.db"
    async with _store(path, "one") as store:
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another process writing for a while
        try:
            started = time.monotonic()
            claimed = await asyncio.wait_for(
                store.claim("w1", 2.0, time.time(), time.time() + 30, {"idle": 10}), 5)
            assert claimed == []
            assert time.monotonic() - started < 1.0  # no wait for the lock
        finally:
            other.execute("ROLLBACK")
            other.close()
        (row,) = await store.claim("w1", 2.0, time.time(), time.time() + 30, {"wf": 10})
        assert (row.id, row.status) == ("one", "running")


async def test_the_claims_read_first_still_takes_every_kind_of_runnable_instance(
    tmp_path: Path,
) -> None:
    # What the read looks for must cover all a claim takes: queued (plain and per tenant),
    # due sleepers, and instances whose worker's lease ran out (running or pausing).
    async with _store(tmp_path / "a.db") as store:
        now = time.time()

        async def claim(workflow: str, *, at: float = 2.0,
                        tenants: dict[str, int | None] | None = None) -> list[str]:
            rows = await store.claim("w2", at, now, now + 30, {workflow: 10}, tenants)
            return [row.id for row in rows]

        await store.create_instances("fair", [("t", None)], 1.0, skip_existing=False,
                                     tenant="acme")
        assert await claim("fair", tenants={"fair": 1}) == ["t"]

        (sleeper,) = await store.create_instances("sleep", [("s", None)], 1.0,
                                                  skip_existing=False)
        (running,) = await store.claim("w1", 1.0, now, now + 30, {"sleep": 10})
        assert await store.suspend(sleeper.iid, running.owner or "", 1.0, 5.0, [], []) \
            == "waiting"
        assert await claim("sleep", at=4.0) == []  # not due yet
        assert await claim("sleep", at=6.0) == ["s"]

        for status in ("running", "waiting_for_pause"):
            workflow = f"lost-{status}"
            (row,) = await store.create_instances(workflow, [("l", None)], 1.0,
                                                  skip_existing=False)
            await store.claim("gone", 1.0, now - 60, now - 30, {workflow: 10})  # expired
            conn = sqlite3.connect(tmp_path / "a.db")
            conn.execute("UPDATE instances SET status = ? WHERE iid = ?", (status, row.iid))
            conn.commit()
            conn.close()
            assert await claim(workflow) == ["l"]


async def test_feed_places_stay_unique_when_commits_of_history_alone_skip_the_counter(
    tmp_path: Path,
) -> None:
    """Steps take places in the feed that only the counter in ``meta`` remembers; history
    rows are remembered by their own ``seq``. A commit of history alone (a create) leaves
    the counter unwritten, and the next commit still starts after every place taken, in
    this engine or in another one on the same file."""
    async def three_steps(event: af.Event, step: af.Step) -> int:
        for n in range(3):
            await step.do(f"s{n}", lambda n=n: n)
        return 3

    url = f"sqlite:///{tmp_path / 'f.db'}"
    counter_writes = 0

    def trace(statement: str) -> None:
        nonlocal counter_writes
        counter_writes += statement.startswith("UPDATE meta")

    async with af.Engine.open(url) as one, af.Engine.open(url) as two:
        ones, twos = one.register("w", three_steps), two.register("w", three_steps)
        first = await ones.create()
        await first.wait(timeout=10)
        conn = one._storage._db.conn  # type: ignore[attr-defined]
        conn.set_trace_callback(trace)
        queued = await one.binding("w").create_batch([{} for _ in range(3)])
        conn.set_trace_callback(None)
        assert counter_writes == 0
        for instance in [*queued, await twos.create(), await ones.create()]:
            assert (await instance.wait(timeout=10)).status == "complete"
    db = sqlite3.connect(tmp_path / "f.db")
    places = [p for (p,) in db.execute(
        "SELECT seq FROM history UNION ALL SELECT hseq FROM steps WHERE hseq IS NOT NULL")]
    assert len(places) == len(set(places)), "two feed entries share a place"
    assert len(places) > 6 * 5
