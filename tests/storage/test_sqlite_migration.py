"""Opening a database written by an older agentflow upgrades its schema in place."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from agentflow.storage import HistoryItem, HistoryRow, SqliteStorage, StepRecord
from agentflow.storage.sqlite import SCHEMA_VERSION


def _make_it_version(path: Path, version: int, *statements: str) -> None:
    """Rewrite a current file as an older version left it."""
    with sqlite3.connect(path) as conn:
        for statement in statements:
            conn.execute(statement)
        conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(version),))
    conn.close()


async def test_a_version_1_database_gains_the_open_waits_index(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    store = SqliteStorage(path)
    await store.open()
    await store.close()
    _make_it_version(path, 1, "DROP INDEX steps_open_waits")

    store = SqliteStorage(path)
    await store.open()
    await store.close()
    with sqlite3.connect(path) as conn:
        version = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        index = conn.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND "
                             "name = 'steps_open_waits'").fetchone()
    conn.close()
    assert int(version[0]) == SCHEMA_VERSION == 6
    assert index is not None


def _columns(conn: sqlite3.Connection, index: str) -> list[str]:
    return [row[2] for row in conn.execute(f"PRAGMA index_info({index})")]


async def test_a_version_3_database_gets_the_queue_index_with_tenants(tmp_path: Path) -> None:
    path = tmp_path / "v3.db"
    store = SqliteStorage(path)
    await store.open()
    await store.create_instances("wf", [("kept", None)], 1.0, skip_existing=False, tenant="t")
    await store.close()
    _make_it_version(  # the version 3 queue index, without the tenant
        path, 3, "DROP INDEX instances_schedule",
        "CREATE INDEX instances_schedule ON instances (workflow, status, sched)")

    store = SqliteStorage(path)
    await store.open()
    claimed = await store.claim("w1", 2.0, 2.0, 32.0, {"wf": 1}, {"wf": None})
    await store.close()
    with sqlite3.connect(path) as conn:
        columns = _columns(conn, "instances_schedule")
        version = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    conn.close()
    assert columns == ["workflow", "status", "sched", "tenant"]
    assert int(version[0]) == SCHEMA_VERSION
    assert [row.id for row in claimed] == ["kept"]  # the data came through


async def _steps_in_feed(store: SqliteStorage, names: str, at: float) -> int:
    """Create and claim an instance, journal steps ``names`` (finished at their first attempt,
    with their compact entries) and finish it; its iid."""
    (row,) = await store.create_instances("wf", [(f"i{at:g}", None)], at, skip_existing=False)
    (claimed,) = await store.claim("w1", at, at, at + 30, {"wf": 1}, {})
    assert claimed.owner is not None
    for n, name in enumerate(names, 1):
        record = StepRecord(name, 1, "do", "completed", at + n - 0.5, "1", attempts=1,
                            finished_at=at + n)
        await store.save_step(row.iid, claimed.owner, record, [], entry=True)
    await store.finish(row.iid, claimed.owner, at + 9, "complete", "1", None,
                       [HistoryItem("instance.completed", at + 9)])
    return row.iid


def _types(rows: list[HistoryRow]) -> list[tuple[str, str | None]]:
    return [(h.type, h.step) for h in rows]


async def test_a_finished_steps_journal_row_is_its_entry_in_the_feed(tmp_path: Path) -> None:
    store = SqliteStorage(tmp_path / "f.db")
    await store.open()
    iid = await _steps_in_feed(store, "ab", 10.0)
    feed = await store.read_history(iid)
    await store.close()
    assert _types(feed) == [("instance.queued", None), ("instance.started", None),
                            ("step.completed", "a"), ("step.completed", "b"),
                            ("instance.completed", None)]
    with sqlite3.connect(tmp_path / "f.db") as conn:
        written = conn.execute(
            "SELECT count(*) FROM history WHERE type = 'step.completed'").fetchone()
        places = conn.execute("SELECT hseq FROM steps ORDER BY seq").fetchall()
        counter = conn.execute("SELECT value FROM meta WHERE key = 'feed_seq'").fetchone()
        (history_next,) = conn.execute("SELECT max(seq) + 1 FROM history").fetchone()
    conn.close()
    assert written == (0,)  # no history row: the journal rows stand for them
    assert [p for (p,) in places] == [feed[2].seq, feed[3].seq]
    # the next place: the counter, or past the history's own rows when they came last
    assert int(counter[0]) > feed[3].seq
    assert max(int(counter[0]), history_next) == feed[-1].seq + 1


async def test_a_version_4_database_keeps_its_feed_and_goes_on(tmp_path: Path) -> None:
    path = tmp_path / "v4.db"
    store = SqliteStorage(path)
    await store.open()
    old = await _steps_in_feed(store, "ab", 10.0)
    await store.close()
    _make_it_version(  # as version 4 wrote it: every entry a history row
        path, 4,
        "INSERT INTO history (seq, iid, at, type, step, count, attempt, since) "
        "SELECT hseq, iid, finished_at, 'step.completed', name, count, 1, started_at "
        "FROM steps",
        "ALTER TABLE steps DROP COLUMN hseq",
        "DELETE FROM meta WHERE key = 'feed_seq'")

    store = SqliteStorage(path)
    await store.open()
    before = await store.read_history(old)
    new = await _steps_in_feed(store, "c", 20.0)
    after = await store.read_history(old)
    feed = await store.read_history(new)
    await store.close()
    assert _types(before) == [("instance.queued", None), ("instance.started", None),
                              ("step.completed", "a"), ("step.completed", "b"),
                              ("instance.completed", None)]
    assert after == before
    assert _types(feed) == [("instance.queued", None), ("instance.started", None),
                            ("step.completed", "c"), ("instance.completed", None)]
    assert feed[0].seq > before[-1].seq  # new places come after every old one
    assert feed[2].since == 20.5 and feed[2].at == 21.0


async def test_rows_numbered_the_sqlite_way_do_not_jam_the_feed(tmp_path: Path) -> None:
    """A history row inserted without a place (as an older agentflow still open on the file
    would write it) past the counter: later commits still find free places."""
    path = tmp_path / "mixed.db"
    store = SqliteStorage(path)
    await store.open()
    first = await _steps_in_feed(store, "ab", 10.0)
    with sqlite3.connect(path) as conn:
        for _ in range(3):
            conn.execute("INSERT INTO history (iid, at, type) VALUES (?, 15.0, 'instance.log')",
                         (first,))
    conn.close()
    second = await _steps_in_feed(store, "c", 20.0)
    feed = await store.read_history(second)
    await store.close()
    assert _types(feed) == [("instance.queued", None), ("instance.started", None),
                            ("step.completed", "c"), ("instance.completed", None)]
    old = await _all_places(path)
    assert len(old) == len(set(old))


async def _all_places(path: Path) -> list[int]:
    with sqlite3.connect(path) as conn:
        places = [seq for (seq,) in conn.execute(
            "SELECT seq FROM history UNION ALL SELECT hseq FROM steps WHERE hseq IS NOT NULL")]
    conn.close()
    return places


async def test_a_version_5_database_indexes_only_tenants_rows_by_tenant(tmp_path: Path) -> None:
    # Version 6: the tenants' index holds rows with a tenant; queued rows without one have
    # an index of their own, so a fair claim still finds them by a seek.
    path = tmp_path / "v5.db"
    store = SqliteStorage(path)
    await store.open()
    await store.create_instances("wf", [("mine", None)], 1.0, skip_existing=False)
    await store.create_instances("wf", [("theirs", None)], 2.0, skip_existing=False,
                                 tenant="t")
    await store.close()
    _make_it_version(  # version 5's indexes: every row by tenant, no untenanted queue
        path, 5, "DROP INDEX instances_by_tenant", "DROP INDEX instances_untenanted_queue",
        "CREATE INDEX instances_by_tenant ON instances (workflow, status, tenant, sched)")

    store = SqliteStorage(path)
    await store.open()
    claimed = await store.claim("w1", 3.0, 3.0, 33.0, {"wf": 2}, {"wf": None})
    await store.close()
    with sqlite3.connect(path) as conn:
        sql = dict(conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index'"))
        version = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        in_tenant_index = conn.execute(
            "SELECT count(*) FROM instances INDEXED BY instances_by_tenant "
            "WHERE workflow = 'wf' AND status = 'running' AND tenant IS NOT NULL").fetchone()
    conn.close()
    assert int(version[0]) == SCHEMA_VERSION
    assert "WHERE tenant IS NOT NULL" in sql["instances_by_tenant"]
    assert "tenant IS NULL" in sql["instances_untenanted_queue"]
    assert "instances_by_id" not in sql  # ids are found through (workflow, id)
    assert sorted(row.id for row in claimed) == ["mine", "theirs"]  # both queues, fairly
    assert in_tenant_index == (1,)
