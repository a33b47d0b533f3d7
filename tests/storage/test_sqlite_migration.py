"""Opening a database written by an older agentflow upgrades its schema in place."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from agentflow.storage import SqliteStorage
from agentflow.storage.sqlite import SCHEMA_VERSION


async def test_a_version_1_database_gains_the_open_waits_index(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    store = SqliteStorage(path)
    await store.open()
    await store.close()
    with sqlite3.connect(path) as conn:  # make it look like a version 1 file
        conn.execute("DROP INDEX steps_open_waits")
        conn.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    conn.close()

    store = SqliteStorage(path)
    await store.open()
    await store.close()
    with sqlite3.connect(path) as conn:
        version = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        index = conn.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND "
                             "name = 'steps_open_waits'").fetchone()
    conn.close()
    assert int(version[0]) == SCHEMA_VERSION == 4
    assert index is not None


def _columns(conn: sqlite3.Connection, index: str) -> list[str]:
    return [row[2] for row in conn.execute(f"PRAGMA index_info({index})")]


async def test_a_version_3_database_gets_the_queue_index_with_tenants(tmp_path: Path) -> None:
    path = tmp_path / "v3.db"
    store = SqliteStorage(path)
    await store.open()
    await store.create_instances("wf", [("kept", None)], 1.0, skip_existing=False, tenant="t")
    await store.close()
    with sqlite3.connect(path) as conn:  # the version 3 queue index, without the tenant
        conn.execute("DROP INDEX instances_schedule")
        conn.execute("CREATE INDEX instances_schedule ON instances (workflow, status, sched)")
        conn.execute("UPDATE meta SET value = '3' WHERE key = 'schema_version'")
    conn.close()

    store = SqliteStorage(path)
    await store.open()
    claimed = await store.claim("w1", 2.0, 2.0, 32.0, {"wf": 1}, {"wf": None})
    await store.close()
    with sqlite3.connect(path) as conn:
        columns = _columns(conn, "instances_schedule")
        version = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    conn.close()
    assert columns == ["workflow", "status", "sched", "tenant"]
    assert int(version[0]) == 4
    assert [row.id for row in claimed] == ["kept"]  # the data came through
