"""What the SQLite store does that the protocol does not ask of every store: telling an
engine whether other connections wrote, and claims that take no write lock when idle."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

from agentflow.storage import SqliteStorage


async def test_changed_elsewhere_sees_other_connections_commits_not_its_own(
    tmp_path: Path,
) -> None:
    # An engine's waiters skip their poll when nothing but the engine itself wrote.
    path = tmp_path / "a.db"
    store = SqliteStorage(path)
    await store.open()
    try:
        assert store.changed_elsewhere() is False
        await store.create_instances("wf", [("mine", None)], 1.0, skip_existing=False)
        assert store.changed_elsewhere() is False
        other = sqlite3.connect(path)
        other.execute("UPDATE instances SET updated_at = 2.0")
        other.commit()
        other.close()
        assert store.changed_elsewhere() is True
        assert store.changed_elsewhere() is False  # (until the next one)
    finally:
        await store.close()
    assert store.changed_elsewhere() is True  # closed: the caller must look for itself


async def test_a_claim_with_nothing_to_take_leaves_the_write_lock_alone(
    tmp_path: Path,
) -> None:
    # Idle workers poll with claims: they must not queue behind (or hold) the write lock.
    path = tmp_path / "a.db"
    store = SqliteStorage(path)
    await store.open()
    try:
        await store.create_instances("busy", [("one", None)], 1.0, skip_existing=False)
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
        (row,) = await store.claim("w1", 2.0, time.time(), time.time() + 30, {"busy": 10})
        assert (row.id, row.status) == ("one", "running")
    finally:
        await store.close()
