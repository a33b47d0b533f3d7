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
    assert int(version[0]) == SCHEMA_VERSION == 3
    assert index is not None
