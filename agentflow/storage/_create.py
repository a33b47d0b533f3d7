"""Inserting new instances: a whole batch in one statement, or one row at a time when an id
is taken (to say which, or to skip it). The first ``started`` items go in already claimed
(running, leased to a worker); the rest are queued."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..errors import DuplicateInstanceError
from .records import InstanceRow, StartNow

# A row's empty columns are spelled NULL in the statement, or travel as '' (which no JSON
# text or tenant id is) and become NULL there: binding None costs the sqlite3 module more
# than the rest of the row. Queued and started rows differ in their constant columns.
_INSERT = (
    "INSERT INTO instances (workflow, id, status, params, created_at, updated_at, ready_at, "
    "tenant, owner, lease_until, runs, woken) VALUES (?, ?, {}) ON CONFLICT DO NOTHING"
)
_INSERT_QUEUED = _INSERT.format("'queued', NULLIF(?, ''), ?, ?, ?, NULLIF(?, ''), NULL, NULL, 0, 0")
_INSERT_STARTED = _INSERT.format("'running', NULLIF(?, ''), ?, ?, ?, NULLIF(?, ''), ?, ?, 1, 1")
_BULK_FROM = 4  # fewer rows: a statement per row costs less than the bulk path's extra three


class _Rows:
    """The column values of new rows, queued or started."""

    def __init__(self, workflow: str, now: float, tenant: str | None,
                 start: StartNow | None) -> None:
        self.workflow, self.now, self.tenant = workflow, now, tenant
        self.owner = None if start is None else f"{start.worker}#1"  # the first run's token
        self.lease_until = None if start is None else start.lease_until

    def statement(self, started: bool) -> str:
        return _INSERT_STARTED if started else _INSERT_QUEUED

    def values(self, id: str, params: str | None, started: bool) -> tuple[Any, ...]:
        now, tenant = self.now, self.tenant or ""
        if started:
            return (self.workflow, id, params or "", now, now, now, tenant, self.owner,
                    self.lease_until)
        return (self.workflow, id, params or "", now, now, now, tenant)

    def row(self, iid: int, id: str, params: str | None, started: bool) -> InstanceRow:
        now = self.now
        if started:
            return InstanceRow(iid, self.workflow, id, "running", params, now, now,
                               owner=self.owner, lease_until=self.lease_until, runs=1,
                               tenant=self.tenant, inbox_pending=False)
        return InstanceRow(iid, self.workflow, id, "queued", params, now, now,
                           tenant=self.tenant)


def insert_instances(
    conn: Any, workflow: str, items: Sequence[tuple[str, str | None]], now: float,
    tenant: str | None, *, skip_existing: bool, bulk: bool, start: StartNow | None = None,
    started: int = 0,
) -> list[InstanceRow]:
    """Insert instances, the first ``started`` items claimed for ``start.worker``; the rows
    created, in the items' order."""
    rows = _Rows(workflow, now, tenant, start)
    if bulk and len(items) >= _BULK_FROM:
        created = _insert_all(conn, rows, items, started)
        if created is not None:
            return created
    return _insert_each(conn, rows, items, skip_existing, started)


def _insert_all(conn: Any, rows: _Rows, items: Sequence[tuple[str, str | None]],
                started: int) -> list[InstanceRow] | None:
    """Every item in one ``executemany``; None (and nothing inserted) if an id was taken."""
    if len({id for id, _ in items}) != len(items):
        return None
    conn.execute("SAVEPOINT insert_all")
    inserted = 0
    for begin, end, start in ((0, started, True), (started, len(items), False)):
        if begin < end:
            inserted += conn.executemany(rows.statement(start), [
                rows.values(id, params, start) for id, params in items[begin:end]
            ]).rowcount
    if inserted != len(items):
        conn.execute("ROLLBACK TO insert_all")
        conn.execute("RELEASE insert_all")
        return None
    conn.execute("RELEASE insert_all")
    iids: dict[str, int] = {}
    for first in range(0, len(items), 500):  # stay under SQLite's parameter limit
        chunk = [id for id, _ in items[first:first + 500]]
        iids.update(conn.execute(
            f"SELECT id, iid FROM instances WHERE workflow = ? "
            f"AND id IN ({','.join('?' * len(chunk))})",
            (rows.workflow, *chunk),
        ).fetchall())
    return [rows.row(iids[id], id, params, n < started) for n, (id, params) in enumerate(items)]


def _insert_each(conn: Any, rows: _Rows, items: Sequence[tuple[str, str | None]],
                 skip_existing: bool, started: int) -> list[InstanceRow]:
    created: list[InstanceRow] = []
    seen: set[str] = set()
    running = 0  # started so far (an id that was taken starts nothing)
    for id, params in items:
        if id in seen:
            if skip_existing:
                continue
            raise DuplicateInstanceError(f"instance id {id!r} appears twice in the batch")
        seen.add(id)
        start = running < started
        inserted = conn.execute(
            rows.statement(start) + " RETURNING iid", rows.values(id, params, start)
        ).fetchone()
        if inserted is None:
            if skip_existing:
                continue
            raise DuplicateInstanceError(
                f"an instance with id {id!r} already exists in workflow {rows.workflow!r}; "
                "choose another id, or use get(id) to reach the existing one"
            )
        running += start
        created.append(rows.row(int(inserted[0]), id, params, start))
    return created
