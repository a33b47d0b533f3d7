"""The PostgreSQL backend: many workers on many machines share one database.

The same statements as the SQLite backend where the dialects agree (``SqliteStorage``'s
methods run on a :class:`PgConnection`), PostgreSQL's own where they differ: identity keys
returned by ``RETURNING``, claims serialised per workflow by a transaction-level advisory lock
and taken with ``FOR UPDATE SKIP LOCKED``, instance rows locked while a unit checks and
writes them, typed parameters where PostgreSQL cannot infer them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any, cast

from ..errors import DuplicateInstanceError, StorageError
from . import _sqlite_approvals as _approvals
from ._pg_connection import PgConnection, PgDb
from ._statements import (
    _ACTIVE,
    _CODE_COLUMNS,
    _INSTANCE_COLUMNS,
    _UPSERT_STEP,
    SCHEMA_VERSION,
    WAKE_HEAD_START,
    _instance,
    _owned_status,
    _step_values,
    _upsert_steps,
)
from .protocol import LeaseLost
from .records import CodeRow, HistoryItem, InboxEvent, InstanceRow, StepRecord
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
    "CREATE INDEX IF NOT EXISTS instances_schedule ON instances (workflow, status, sched)",
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
        if version < SCHEMA_VERSION:
            for statement in _SCHEMA[1:]:
                conn.execute(statement)
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('schema_version', ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (str(SCHEMA_VERSION),))

    # -- where the dialects differ ------------------------------------------------------------
    async def create_instances(
        self, workflow: str, items: Sequence[tuple[str, str | None]], now: float, *,
        skip_existing: bool, tenant: str | None = None,
    ) -> list[InstanceRow]:
        def run(conn: PgConnection) -> list[InstanceRow]:
            created: list[InstanceRow] = []
            seen: set[str] = set()
            for id, params in items:
                if id in seen:
                    if skip_existing:
                        continue
                    raise DuplicateInstanceError(f"instance id {id!r} appears twice in the batch")
                seen.add(id)
                row = conn.execute(
                    "INSERT INTO instances (workflow, id, status, params, created_at, updated_at,"
                    " ready_at, tenant) VALUES (?, ?, 'queued', ?, ?, ?, ?, ?) "
                    "ON CONFLICT DO NOTHING RETURNING iid",
                    (workflow, id, params, now, now, now, tenant),
                ).fetchone()
                if row is None:
                    if skip_existing:
                        continue
                    raise DuplicateInstanceError(
                        f"an instance with id {id!r} already exists in workflow {workflow!r}; "
                        "choose another id, or use get(id) to reach the existing one")
                self._history(int(row[0]), [HistoryItem("instance.queued", now)])
                created.append(InstanceRow(int(row[0]), workflow, id, "queued", params, now,
                                           now, tenant=tenant))
            return created

        return await self._pg.write(run)

    def _claim_workflow(
        self, conn: Any, workflow: str, limit: int, worker: str, now: float,
        lease_now: float, lease_until: float, tenant_limits: dict[str, int | None],
    ) -> list[InstanceRow]:
        # Workers on every machine claim one workflow at a time: the running count and the
        # rows taken are then consistent. Rows another transaction holds are skipped.
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(?))", (f"claim:{workflow}",))
        lost = conn.execute(
            "SELECT iid FROM instances WHERE workflow = ? AND status IN (?, ?) "
            "AND lease_until < ? ORDER BY ready_at LIMIT ? FOR UPDATE SKIP LOCKED",
            (workflow, *_ACTIVE, lease_now, limit),
        ).fetchall()
        (active,) = conn.execute(
            "SELECT count(*) FROM instances WHERE workflow = ? AND status IN (?, ?)",
            (workflow, *_ACTIVE),
        ).fetchone()
        free = max(0, limit - int(active))
        ready: list[tuple[float, int]] = []
        if free and workflow in tenant_limits:
            ready = self._fair_candidates(conn, workflow, free, now, tenant_limits[workflow])
        elif free:
            ready = [(float(k), int(i)) for k, i in conn.execute(
                "SELECT sched, iid FROM instances WHERE workflow = ? AND status = 'queued' "
                "ORDER BY sched LIMIT ? FOR UPDATE SKIP LOCKED", (workflow, free),
            ).fetchall()] + [(float(k), int(i)) for k, i in conn.execute(
                "SELECT sched - ?, iid FROM instances WHERE workflow = ? "
                "AND status = 'waiting' AND sched <= ? ORDER BY sched LIMIT ? "
                "FOR UPDATE SKIP LOCKED", (WAKE_HEAD_START, workflow, now, free),
            ).fetchall()]
            ready = sorted(ready)[:free]
        iids = [int(r[0]) for r in lost] + [r[1] for r in ready]
        if not iids:
            return []
        rows = [_instance(r) for r in conn.execute(
            "UPDATE instances SET status = CASE WHEN status = 'waiting_for_pause' "
            "THEN status ELSE 'running' END, owner = ? || '#' || CAST(runs + 1 AS TEXT), "
            "lease_until = ?, woken = 1, wake_at = NULL, wait_types = NULL, runs = runs + 1, "
            f"updated_at = ? WHERE iid = ANY(?) RETURNING {_INSTANCE_COLUMNS}",
            (worker, lease_until, now, iids),
        ).fetchall()]
        position = {iid: n for n, iid in enumerate(iids)}
        rows.sort(key=lambda row: position[row.iid])
        for row in rows:
            self._history(row.iid, [HistoryItem("instance.started", now, data={"run": row.runs})])
        return rows

    async def save_step(
        self, iid: int, owner: str, record: StepRecord, history: Sequence[HistoryItem],
        consume: int | None = None, *, earlier: Sequence[StepRecord] = (),
    ) -> str:
        def run(conn: PgConnection) -> str:
            status = _owned_status(conn, iid, owner)  # the row stays locked
            if consume is not None and conn.execute(
                "SELECT 1 FROM inbox WHERE seq = ? AND iid = ? AND consumed_by IS NULL",
                (consume, iid),
            ).fetchone() is None:
                raise LeaseLost("event already consumed")
            _upsert_steps(conn, iid, earlier)
            (seq,) = conn.execute(_UPSERT_STEP + " RETURNING seq",
                                  _step_values(iid, record)).fetchone()
            if consume is not None:
                conn.execute("UPDATE inbox SET consumed_by = ? WHERE seq = ?", (seq, consume))
            self._history(iid, history)
            return status

        return await self._pg.write(run)

    async def put_code(
        self, tenant: str, name: str, sha256: str, source: str, now: float
    ) -> CodeRow:
        def run(conn: PgConnection) -> CodeRow:
            # Versions of one (tenant, name) are numbered one registration at a time.
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(?))", (f"code:{tenant}/{name}",))
            row = conn.execute(
                f"SELECT {_CODE_COLUMNS} FROM code WHERE tenant = ? AND name = ? AND sha256 = ?",
                (tenant, name, sha256)).fetchone()
            if row is not None:
                return CodeRow(*row)
            (version,) = conn.execute(
                "SELECT coalesce(max(version), 0) + 1 FROM code WHERE tenant = ? AND name = ?",
                (tenant, name)).fetchone()
            conn.execute(
                "INSERT INTO code (tenant, name, sha256, source, created_at, version) "
                "VALUES (?, ?, ?, ?, ?, ?)", (tenant, name, sha256, source, now, int(version)))
            return CodeRow(tenant, name, sha256, source, now, int(version))

        return await self._pg.write(run)

    def _deliver(self, conn: Any, iid: int, type: str, payload: str | None,
                 now: float) -> InboxEvent:
        conn.execute("SELECT 1 FROM instances WHERE iid = ? FOR UPDATE", (iid,))
        (seq,) = conn.execute(
            "INSERT INTO inbox (iid, type, payload, at) VALUES (?, ?, ?, ?) RETURNING seq",
            (iid, type, payload, now)).fetchone()
        row = conn.execute("SELECT status, wait_types FROM instances WHERE iid = ?",
                           (iid,)).fetchone()
        if row and row[0] == "waiting" and type in json.loads(row[1] or "[]"):
            conn.execute(
                "UPDATE instances SET status = 'queued', wake_at = NULL, wait_types = NULL, "
                "ready_at = ?, updated_at = ? WHERE iid = ?", (now, now, iid))
        self._history(iid, [HistoryItem("event.received", now, data={"type": type})])
        return InboxEvent(int(seq), type, payload, now)

    async def decide_approval(
        self, iid: int, gate: str, count: int, payload: str, version: str | None,
        check_version: bool, now: float,
    ) -> str:
        def run(conn: PgConnection) -> str:
            conn.execute("SELECT 1 FROM instances WHERE iid = ? FOR UPDATE", (iid,))
            return _approvals.decide(conn, iid, gate, count, payload, version,  # type: ignore[arg-type]
                                     check_version, now, self._deliver, self._history)

        return await self._pg.write(run)
