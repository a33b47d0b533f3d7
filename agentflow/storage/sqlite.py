"""The embedded SQLite backend: one file, WAL, ``BEGIN IMMEDIATE`` writes, a schema version."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Awaitable, Callable, Collection, Sequence
from pathlib import Path
from typing import Any

from ..errors import StorageError
from . import _sqlite_approvals as _approvals
from ._connection import Connection
from ._create import insert_instances
from ._feed import INSERT_HISTORY_AT, KEEP_ENTRIES, FeedCounter
from ._feed import READ as READ_FEED
from ._run_end import (
    _FINISH_DONE,
    _FINISH_FAILED,
    _SUSPEND,
    _park,
)
from ._sqlite_scheduling import Scheduling
from ._sqlite_schema import migrate
from ._statements import (
    _ACTIVE,
    _CODE_COLUMNS,
    _INSTANCE_COLUMNS,
    _STEP_COLUMNS,
    _UPSERT_DONE_IF_RUNNING,
    FINISHED_STATUSES,
    SCHEMA_VERSION,
    WAKE_HEAD_START,
    _done_values,
    _dumps,
    _history_row,
    _history_rows,
    _instance,
    _is_done_shape,
    _owned_status,
    _save_step_checked,
    _step_statement,
    _upsert_steps,
)
from .protocol import Decide, LeaseLost
from .records import (
    ApprovalRow,
    Change,
    CodeRow,
    HistoryItem,
    HistoryRow,
    InboxEvent,
    InstanceRow,
    StartNow,
    StepRecord,
    compact_entry,
)

__all__ = ["SCHEMA_VERSION", "WAKE_HEAD_START", "SqliteStorage"]

# An id in any workflow, by one seek of the (workflow, id) index per workflow: the workflows
# are listed by a walk of the same index (one seek each), and a store has few.
_BY_ID = (
    "(workflow, id) IN (WITH RECURSIVE w(name) AS ("
    " SELECT min(workflow) FROM instances"
    " UNION ALL"
    " SELECT (SELECT min(workflow) FROM instances WHERE workflow > w.name) FROM w"
    " WHERE w.name IS NOT NULL) "
    "SELECT name, ? FROM w WHERE name IS NOT NULL)"
)


class SqliteStorage(Scheduling):
    """Storage on one SQLite file. Several processes may open the same file."""

    # Batches of new instances go in with one executemany (SQLite counts its rows).
    _BULK_INSERT = True
    # A first attempt's journal row stands for its 'step.completed' entry (see _feed).
    _STEP_ENTRIES = True
    # An index on ids alone (PostgreSQL). SQLite has none: it would be one more page written
    # by every create; an id is found under each workflow in turn (see _BY_ID).
    _ID_INDEX = False

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._feed = FeedCounter()
        self._db = Connection(self.path, hooks=self._feed)

    def _history(self, iid: int, items: Sequence[HistoryItem]) -> None:
        """Append history rows; inside a write unit, they are inserted with its commit."""
        if items:
            self._queue_history(_history_rows(iid, items))

    def _queue_history(self, rows: list[tuple[Any, ...]], first: int | None = None) -> None:
        """Insert rows built by ``_history_rows`` with this commit, at the next places of
        the feed (or from place ``first``, taken already)."""
        if rows:
            if first is None:
                first = self._feed.take(len(rows))
            self._db.later(INSERT_HISTORY_AT, [(first + n, *row) for n, row in enumerate(rows)])

    # -- lifecycle --------------------------------------------------------------------------
    async def open(self) -> None:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._db.start()
        await self._db.write(self._migrate)

    def _migrate(self, conn: sqlite3.Connection) -> None:
        migrate(conn, self.path)

    async def close(self) -> None:
        await self._db.close()

    def data_version(self) -> int | None:
        """A number that changes when another connection (another process, another engine)
        commits to the file, and only then: while it stays put, this engine saw every change
        itself. None once closed."""
        try:
            version: int = self._db.conn.execute("PRAGMA data_version").fetchone()[0]
        except (sqlite3.Error, StorageError):
            return None
        return version

    def before_next_commit(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` as the next commit begins; what it writes joins that commit."""
        self._db.before_next_commit(callback)

    # -- instances --------------------------------------------------------------------------
    def create_instances(
        self, workflow: str, items: Sequence[tuple[str, str | None]], now: float, *,
        skip_existing: bool, tenant: str | None = None, start: StartNow | None = None,
    ) -> Awaitable[list[InstanceRow]]:
        # A plain function returning the commit's future (on SQLite): the creator is told
        # the moment the commit lands, with no task in between.
        def run(conn: sqlite3.Connection) -> list[InstanceRow]:
            started = 0 if start is None else self._startable(conn, workflow, start, now)
            created = insert_instances(conn, workflow, items, now, tenant,
                                       skip_existing=skip_existing, bulk=self._BULK_INSERT,
                                       start=start, started=min(started, len(items)))
            # Every new row's entries are the same but for the iid: encoded once.
            queued = _history_row(0, HistoryItem("instance.queued", now))[1:]
            running = _history_row(0, HistoryItem("instance.started", now, data={"run": 1}))[1:]
            history: list[tuple[Any, ...]] = []
            for row in created:
                history.append((row.iid, *queued))
                if row.owner is not None:
                    history.append((row.iid, *running))
            self._queue_history(history)
            return created

        # One item raises before its only write; a batch may raise after some.
        return self._db.write(run, savepoint=len(items) > 1)

    async def get_instance(self, workflow: str, id: str) -> InstanceRow | None:
        def run(conn: sqlite3.Connection) -> InstanceRow | None:
            row = conn.execute(
                f"SELECT {_INSTANCE_COLUMNS} FROM instances WHERE workflow = ? AND id = ?",
                (workflow, id),
            ).fetchone()
            return _instance(row) if row else None

        return await self._db.read(run)

    async def get_instances(self, workflow: str, ids: Sequence[str]) -> list[InstanceRow]:
        def run(conn: sqlite3.Connection) -> list[InstanceRow]:
            found: list[InstanceRow] = []
            for start in range(0, len(ids), 500):  # stay under SQLite's parameter limit
                chunk = list(ids[start:start + 500])
                found.extend(_instance(r) for r in conn.execute(
                    f"SELECT {_INSTANCE_COLUMNS} FROM instances WHERE workflow = ? "
                    f"AND id IN ({','.join('?' * len(chunk))})",
                    (workflow, *chunk),
                ))
            return found

        return await self._db.read(run)

    async def get_instance_by_iid(self, iid: int) -> InstanceRow | None:
        def run(conn: sqlite3.Connection) -> InstanceRow | None:
            row = conn.execute(
                f"SELECT {_INSTANCE_COLUMNS} FROM instances WHERE iid = ?", (iid,)
            ).fetchone()
            return _instance(row) if row else None

        return await self._db.read(run)

    async def list_instances(
        self, *, workflow: str | None = None, id: str | None = None,
        status: str | None = None, limit: int = 100,
    ) -> list[InstanceRow]:
        where: list[str] = []
        args: list[Any] = []
        if id is not None and workflow is None and not self._ID_INDEX:
            where.append(_BY_ID)
            args.append(id)
            id = None
        for column, value in (("workflow", workflow), ("id", id), ("status", status)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        # Newest first: the ids are picked from an index alone (every index holds the iid),
        # then only those rows are read; sorting whole rows read every matching one.
        picked = "SELECT iid FROM instances"
        if where:
            picked += " WHERE " + " AND ".join(where)
        sql = (f"SELECT {_INSTANCE_COLUMNS} FROM instances WHERE iid IN "
               f"({picked} ORDER BY iid DESC LIMIT ?) ORDER BY iid DESC")
        args.append(limit)
        return await self._db.read(
            lambda conn: [_instance(r) for r in conn.execute(sql, args).fetchall()]
        )

    async def transition(self, iid: int, decide: Decide) -> InstanceRow:
        def run(conn: sqlite3.Connection) -> InstanceRow:
            row = conn.execute(
                f"SELECT {_INSTANCE_COLUMNS} FROM instances WHERE iid = ?", (iid,)
            ).fetchone()
            if row is None:
                raise LeaseLost("unknown")
            change = decide(_instance(row))
            self._apply(conn, iid, change)
            new = conn.execute(
                f"SELECT {_INSTANCE_COLUMNS} FROM instances WHERE iid = ?", (iid,)
            ).fetchone()
            return _instance(new)

        return await self._db.write(run)

    def _apply(self, conn: sqlite3.Connection, iid: int, change: Change) -> None:
        if change.fields:
            fields = dict(change.fields)
            if "wait_types" in fields:
                fields["wait_types"] = json.dumps(list(fields["wait_types"] or ()))
            assignments = ", ".join(f"{column} = ?" for column in fields)
            conn.execute(
                f"UPDATE instances SET {assignments} WHERE iid = ?", (*fields.values(), iid)
            )
        if change.reset_journal_from is not None:
            start = change.reset_journal_from
            conn.execute(
                "UPDATE inbox SET consumed_by = NULL WHERE iid = ? AND consumed_by >= ?",
                (iid, start),
            )
            if self._STEP_ENTRIES:  # the feed keeps the entries those rows stand for
                conn.execute(KEEP_ENTRIES, (iid, start))
            conn.execute("DELETE FROM steps WHERE iid = ? AND seq >= ?", (iid, start))
        if change.shift_timers:
            conn.execute(
                "UPDATE steps SET wake_at = wake_at + ? WHERE iid = ? AND wake_at IS NOT NULL "
                "AND state IN ('sleeping', 'waiting', 'retrying')",
                (change.shift_timers, iid),
            )
        self._history(iid, change.history)

    # -- a run ------------------------------------------------------------------------------
    async def load_journal(self, iid: int) -> list[StepRecord]:
        def run(conn: sqlite3.Connection) -> list[StepRecord]:
            rows = conn.execute(
                f"SELECT {_STEP_COLUMNS} FROM steps WHERE iid = ? ORDER BY seq", (iid,)
            ).fetchall()
            return [StepRecord(*row) for row in rows]

        return await self._db.read(run)

    def save_step(
        self, iid: int, owner: str, record: StepRecord, history: Sequence[HistoryItem],
        consume: int | None = None, *, earlier: Sequence[StepRecord] = (),
        entry: bool = False,
    ) -> Awaitable[str]:
        # (A plain function returning the commit's future: the hot path of every step.) The
        # statement's values and the history rows are built inside the unit, at commit time:
        # built here they would live across the loop turn, and the young collections there
        # walk everything still alive (measured slower).
        if entry and consume is None and not earlier and _is_done_shape(record):
            def finished(conn: sqlite3.Connection) -> str:
                # The commonest write: the journal row stands for the step's entry in the
                # feed, after the rest of the history (see _feed).
                rows = _history_rows(iid, history)  # encoded before the first write
                first = self._feed.take(len(rows) + 1, step=True)
                if conn.execute(_UPSERT_DONE_IF_RUNNING, (
                        *_done_values(iid, record, owner), first + len(rows))).rowcount == 1:
                    self._queue_history(rows, first)
                    return "running"
                # Not running, or not ours: the checked path says why.
                rows.append(_history_row(iid, compact_entry(record)))
                return self._save_step(conn, iid, owner, record, rows, None, ())

            return self._db.write(finished, savepoint=False)
        if entry:
            history = [*history, compact_entry(record)]
        if consume is None and not earlier:
            def common(conn: sqlite3.Connection) -> str:
                rows = _history_rows(iid, history)  # encoded before the first write
                # The usual case in one statement; anything else (not running, not ours)
                # takes the checked path, which says why.
                if conn.execute(*_step_statement(iid, record, owner)).rowcount == 1:
                    self._queue_history(rows)
                    return "running"
                return self._save_step(conn, iid, owner, record, rows, None, ())

            return self._db.write(common, savepoint=False)
        return self._db.write(
            lambda conn: self._save_step(
                conn, iid, owner, record, _history_rows(iid, history), consume, earlier),
            savepoint=False,
        )

    def _save_step(
        self, conn: sqlite3.Connection, iid: int, owner: str, record: StepRecord,
        rows: list[tuple[Any, ...]], consume: int | None, earlier: Sequence[StepRecord],
    ) -> str:
        # Every check comes before the first write, so this unit needs no savepoint.
        status = _save_step_checked(conn, iid, owner, record, consume, earlier)
        self._queue_history(rows)
        return status

    async def append_history(
        self, iid: int, owner: str, history: Sequence[HistoryItem]
    ) -> None:
        def run(conn: sqlite3.Connection) -> None:
            _owned_status(conn, iid, owner)
            self._history(iid, history)

        await self._db.write(run, savepoint=False)

    async def suspend(
        self, iid: int, owner: str, now: float, wake_at: float | None,
        wait_types: Sequence[str], history: Sequence[HistoryItem], *,
        records: Sequence[StepRecord] = (),
    ) -> str:
        types = sorted(set(wait_types))
        rows = _history_rows(iid, history)  # encoded before the first write: it may raise

        def run(conn: sqlite3.Connection) -> str:
            # An event that arrived while the run went on (the run may not have looked)
            # queues the instance again rather than letting it hibernate. The row is locked
            # first (PostgreSQL): a delivery still in flight then either committed its event
            # before this read, or finds the instance waiting after this unit and wakes it.
            self._lock_instance(conn, iid)
            pending = bool(types) and conn.execute(
                f"SELECT 1 FROM inbox WHERE iid = ? AND consumed_by IS NULL AND type IN "
                f"({','.join('?' * len(types))}) LIMIT 1",
                (iid, *types),
            ).fetchone() is not None
            if pending or (wake_at is None and not types) or (
                wake_at is not None and wake_at <= now
            ):
                new: tuple[str, float | None, str | None] = ("queued", None, None)
            else:
                new = ("waiting", wake_at, _dumps(types))
            if _park(conn, iid, owner, new, now):
                status = new[0]
            else:
                # The ownership check is the update's own condition; a pause asked for
                # meanwhile wins over both outcomes.
                row = conn.execute(
                    _SUSPEND, (*new, now, now, now, iid, owner, *_ACTIVE)).fetchone()
                if row is None:
                    _owned_status(conn, iid, owner)  # raises LeaseLost with the reason
                    raise LeaseLost("unknown")
                status = str(row[0])
            _upsert_steps(conn, iid, records)
            self._queue_history(rows if status == "queued" else [
                *rows, _history_row(iid, HistoryItem(f"instance.{status}", now))])
            return status

        return await self._db.write(run, savepoint=False)

    async def finish(
        self, iid: int, owner: str, now: float, status: str, output: str | None,
        error: tuple[str, str] | None, history: Sequence[HistoryItem], *,
        records: Sequence[StepRecord] = (),
    ) -> None:
        def run(conn: sqlite3.Connection) -> None:
            # The ownership check is the update's own condition: no write unless owned.
            updated = (
                conn.execute(_FINISH_DONE, (status, output, now, iid, owner, *_ACTIVE))
                if error is None else
                conn.execute(_FINISH_FAILED, (status, output, *error, now, iid, owner, *_ACTIVE))
            ).rowcount
            if not updated:
                _owned_status(conn, iid, owner)  # raises LeaseLost with the reason
                raise LeaseLost("unknown")
            _upsert_steps(conn, iid, records)
            self._history(iid, history)

        await self._db.write(run, savepoint=False)

    # -- tenant code --------------------------------------------------------------------------
    async def put_code(
        self, tenant: str, name: str, sha256: str, source: str, now: float
    ) -> CodeRow:
        def run(conn: sqlite3.Connection) -> CodeRow:
            self._serialise(conn, f"code:{tenant}/{name}")  # versions numbered one at a time
            row = conn.execute(
                f"SELECT {_CODE_COLUMNS} FROM code WHERE tenant = ? AND name = ? AND sha256 = ?",
                (tenant, name, sha256),
            ).fetchone()
            if row is not None:  # content-addressed: registering the same code again is a no-op
                return CodeRow(*row)
            (version,) = conn.execute(
                "SELECT coalesce(max(version), 0) + 1 FROM code WHERE tenant = ? AND name = ?",
                (tenant, name),
            ).fetchone()
            conn.execute(
                "INSERT INTO code (tenant, name, sha256, source, created_at, version) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (tenant, name, sha256, source, now, int(version)),
            )
            return CodeRow(tenant, name, sha256, source, now, int(version))

        return await self._db.write(run)

    async def get_code(self, tenant: str, sha256: str) -> CodeRow | None:
        def run(conn: sqlite3.Connection) -> CodeRow | None:
            row = conn.execute(
                f"SELECT {_CODE_COLUMNS} FROM code WHERE tenant = ? AND sha256 = ? LIMIT 1",
                (tenant, sha256),
            ).fetchone()
            return CodeRow(*row) if row else None

        return await self._db.read(run)

    async def code_versions(self, tenant: str, name: str) -> list[CodeRow]:
        def run(conn: sqlite3.Connection) -> list[CodeRow]:
            return [CodeRow(*r) for r in conn.execute(
                f"SELECT {_CODE_COLUMNS} FROM code WHERE tenant = ? AND name = ? "
                "ORDER BY version", (tenant, name),
            )]

        return await self._db.read(run)

    # -- events -----------------------------------------------------------------------------
    async def deliver_event(
        self, iid: int, type: str, payload: str | None, now: float,
    ) -> InboxEvent | None:
        def run(conn: sqlite3.Connection) -> InboxEvent | None:
            return self._deliver(conn, iid, type, payload, now)

        return await self._db.write(run)

    def _deliver(self, conn: sqlite3.Connection, iid: int, type: str, payload: str | None,
                 now: float) -> InboxEvent | None:
        self._lock_instance(conn, iid)
        # Checked in the write: an instance that finished since its caller looked gets
        # nothing (no inbox row, no history entry after its end).
        row = conn.execute(
            "SELECT status, wait_types FROM instances WHERE iid = ?", (iid,)
        ).fetchone()
        if row is None or row[0] in FINISHED_STATUSES:
            return None
        (seq,) = conn.execute(
            "INSERT INTO inbox (iid, type, payload, at) VALUES (?, ?, ?, ?) RETURNING seq",
            (iid, type, payload, now),
        ).fetchone()
        if row[0] == "waiting" and type in json.loads(row[1] or "[]"):
            conn.execute(
                "UPDATE instances SET status = 'queued', wake_at = NULL, wait_types = NULL,"
                " ready_at = ?, updated_at = ? WHERE iid = ?",
                (now, now, iid),
            )
        self._history(iid, [HistoryItem("event.received", now, data={"type": type})])
        return InboxEvent(int(seq), type, payload, now)

    # -- approvals --------------------------------------------------------------------------
    async def pending_approvals(
        self, *, workflow: str | None = None, tenant: str | None = None,
        iid: int | None = None, requested_before: float | None = None, limit: int = 100,
        now: float = float("-inf"),
    ) -> list[ApprovalRow]:
        def run(conn: sqlite3.Connection) -> list[ApprovalRow]:
            return _approvals.pending(conn, workflow=workflow, tenant=tenant, iid=iid,
                                      requested_before=requested_before, limit=limit, now=now)

        return await self._db.read(run)

    async def decide_approval(
        self, iid: int, gate: str, count: int, payload: str, version: str | None,
        check_version: bool, now: float,
    ) -> str:
        def run(conn: sqlite3.Connection) -> str:
            self._lock_instance(conn, iid)  # one decision at a time per instance
            return _approvals.decide(conn, iid, gate, count, payload, version, check_version,
                                     now, self._deliver, self._history)

        return await self._db.write(run)

    async def next_inbox_event(
        self, iid: int, type: str, *, skip: Collection[int] = (),
    ) -> InboxEvent | None:
        skipped = list(skip)
        not_in = f"AND seq NOT IN ({','.join('?' * len(skipped))}) " if skipped else ""

        def run(conn: sqlite3.Connection) -> InboxEvent | None:
            row = conn.execute(
                "SELECT seq, type, payload, at FROM inbox WHERE iid = ? AND type = ? "
                f"AND consumed_by IS NULL {not_in}ORDER BY seq LIMIT 1",
                (iid, type, *skipped),
            ).fetchone()
            return InboxEvent(*row) if row else None

        return await self._db.read(run)

    async def read_history(self, iid: int, after: int = 0, limit: int = 1000) -> list[HistoryRow]:
        def run(conn: sqlite3.Connection) -> list[HistoryRow]:
            rows = conn.execute(READ_FEED, (iid, after, iid, after, limit)).fetchall()
            return [HistoryRow(*row) for row in rows]

        return await self._db.read(run)
