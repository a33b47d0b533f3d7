"""The PostgreSQL backend: many workers on many machines share one database.

The same statements as the SQLite backend where the dialects agree (``SqliteStorage``'s
methods run on a :class:`PgConnection`), PostgreSQL's own where they differ: identity keys
returned by ``RETURNING``, claims serialised per workflow by a transaction-level advisory lock
and taken with ``FOR UPDATE SKIP LOCKED``, instance rows locked while a unit checks and
writes them, typed parameters where PostgreSQL cannot infer them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, cast

from ..errors import StorageError
from ._pg_connection import PgConnection, PgDb
from ._statements import (
    _INSERT_HISTORY,
    SCHEMA_VERSION,
    WAKE_HEAD_START,
    _save_step_checked,
)
from .records import HistoryItem, HistoryRow, StepRecord, compact_entry
from .sqlite import SqliteStorage

_SCHEMA = [
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    f"""CREATE TABLE IF NOT EXISTS instances (
        iid BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        workflow TEXT NOT NULL, id TEXT NOT NULL, status TEXT NOT NULL,
        params TEXT, output TEXT, error_name TEXT, error_message TEXT,
        created_at DOUBLE PRECISION NOT NULL, updated_at DOUBLE PRECISION NOT NULL,
        ready_at DOUBLE PRECISION NOT NULL, woken INTEGER NOT NULL DEFAULT 0,
        wake_at DOUBLE PRECISION, wait_types TEXT, paused_at DOUBLE PRECISION,
        owner TEXT, lease_until DOUBLE PRECISION, runs INTEGER NOT NULL DEFAULT 0, tenant TEXT,
        sched DOUBLE PRECISION GENERATED ALWAYS AS (
            CASE WHEN status = 'waiting' THEN wake_at
            ELSE ready_at - woken * {WAKE_HEAD_START} END) STORED,
        UNIQUE (workflow, id))""",
    "CREATE INDEX IF NOT EXISTS instances_by_id ON instances (id)",
    "CREATE INDEX IF NOT EXISTS instances_schedule ON instances "
    "(workflow, status, sched, tenant)",
    "CREATE INDEX IF NOT EXISTS instances_by_tenant ON instances (workflow, status, tenant, sched)",
    """CREATE TABLE IF NOT EXISTS steps (
        seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, iid BIGINT NOT NULL,
        name TEXT NOT NULL, count INTEGER NOT NULL, kind TEXT NOT NULL, state TEXT NOT NULL,
        result TEXT, error_name TEXT, error_message TEXT, error_detail TEXT,
        attempts INTEGER NOT NULL DEFAULT 0, wake_at DOUBLE PRECISION, event_type TEXT,
        started_at DOUBLE PRECISION NOT NULL, finished_at DOUBLE PRECISION,
        UNIQUE (iid, name, count))""",
    "CREATE INDEX IF NOT EXISTS steps_open_waits ON steps (event_type) "
    "WHERE state = 'waiting'",
    """CREATE TABLE IF NOT EXISTS inbox (
        seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, iid BIGINT NOT NULL,
        type TEXT NOT NULL, payload TEXT, at DOUBLE PRECISION NOT NULL, consumed_by BIGINT)""",
    "CREATE INDEX IF NOT EXISTS inbox_pending ON inbox (iid, type, seq) "
    "WHERE consumed_by IS NULL",
    """CREATE TABLE IF NOT EXISTS history (
        seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, iid BIGINT NOT NULL,
        at DOUBLE PRECISION NOT NULL, type TEXT NOT NULL, step TEXT, count INTEGER,
        attempt INTEGER, since DOUBLE PRECISION, data TEXT)""",
    "CREATE INDEX IF NOT EXISTS history_by_instance ON history (iid, seq)",
    """CREATE TABLE IF NOT EXISTS code (
        tenant TEXT NOT NULL, name TEXT NOT NULL, sha256 TEXT NOT NULL, source TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL, version INTEGER NOT NULL,
        PRIMARY KEY (tenant, name, sha256))""",
    "CREATE INDEX IF NOT EXISTS code_by_sha ON code (tenant, sha256)",
    "CREATE INDEX IF NOT EXISTS code_versions ON code (tenant, name, version)",
]


class PostgresStorage(SqliteStorage):
    """Storage on a PostgreSQL database (``postgresql://user@host:port/db``)."""

    def __init__(self, url: str) -> None:
        self.path = url
        self._pg = PgDb(url)
        # The inherited statements reach the database through ``_db`` (read/write/later).
        self._db = cast(Any, self._pg)

    async def open(self) -> None:
        await self._pg.start()
        await self._pg.write(self._migrate)

    def data_version(self) -> int | None:
        """None: the server does not say cheaply whether other sessions committed, so
        waiters look at every poll (LISTEN/NOTIFY wakes them sooner for most changes)."""
        return None

    def subscribe(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` when another process makes work runnable (LISTEN/NOTIFY)."""
        self._pg.listen(callback)

    def _migrate(self, conn: Any) -> None:
        # One migrator at a time across processes; versions as in SQLite.
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('agentflow.migrate'))")
        conn.execute(_SCHEMA[0])
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        version = int(row[0]) if row else 0
        if version > SCHEMA_VERSION:
            raise StorageError(
                f"the database has schema version {version}, newer than this agentflow "
                f"({SCHEMA_VERSION}); upgrade agentflow to open it")
        if 1 <= version < 4:  # 4: the queue index carries the tenant (fair claims read it)
            conn.execute("DROP INDEX IF EXISTS instances_schedule")
        if version < SCHEMA_VERSION:
            for statement in _SCHEMA[1:]:
                conn.execute(statement)
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('schema_version', ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (str(SCHEMA_VERSION),))

    # -- where the dialects differ ------------------------------------------------------------
    _SKIP_LOCKED = " FOR UPDATE SKIP LOCKED"
    _BULK_INSERT = False  # rows one statement at a time, each returning its iid
    _ID_INDEX = True  # instances_by_id
    _STEP_ENTRIES = False  # every entry of the feed is a history row, numbered by identity

    def _queue_history(self, rows: list[tuple[Any, ...]], first: int | None = None) -> None:
        if rows:  # (places are the identity column's)
            self._pg.later(_INSERT_HISTORY, rows)

    async def read_history(self, iid: int, after: int = 0, limit: int = 1000) -> list[HistoryRow]:
        def run(conn: PgConnection) -> list[HistoryRow]:
            rows = conn.execute(
                "SELECT h.seq, h.iid, i.workflow, i.id, h.type, h.at, h.step, h.data, h.count, "
                "h.attempt, h.since FROM history h JOIN instances i ON i.iid = h.iid "
                "WHERE h.iid = ? AND h.seq > ? ORDER BY h.seq LIMIT ?", (iid, after, limit),
            ).fetchall()
            return [HistoryRow(*row) for row in rows]

        return await self._pg.read(run)

    def _serialise(self, conn: Any, key: str) -> None:
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(?))", (key,))

    def _lock_instance(self, conn: Any, iid: int) -> None:
        conn.execute("SELECT 1 FROM instances WHERE iid = ? FOR UPDATE", (iid,))

    async def save_step(
        self, iid: int, owner: str, record: StepRecord, history: Sequence[HistoryItem],
        consume: int | None = None, *, earlier: Sequence[StepRecord] = (),
        entry: bool = False,
    ) -> str:
        if entry:
            history = [*history, compact_entry(record)]

        def run(conn: PgConnection) -> str:
            status = _save_step_checked(conn, iid, owner, record, consume, earlier)
            self._history(iid, history)
            return status

        return await self._pg.write(run)
