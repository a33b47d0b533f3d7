"""Inserting new instances: a whole batch in one statement, or one row at a time when an id
is taken (to say which, or to skip it)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..errors import DuplicateInstanceError
from .records import InstanceRow

_INSERT = (
    "INSERT INTO instances (workflow, id, status, params, created_at, updated_at, ready_at, "
    "tenant) VALUES (?, ?, 'queued', ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
)
_BULK_FROM = 4  # fewer rows: a statement per row costs less than the bulk path's extra three


def insert_instances(
    conn: Any, workflow: str, items: Sequence[tuple[str, str | None]], now: float,
    tenant: str | None, *, skip_existing: bool, bulk: bool,
) -> list[InstanceRow]:
    """Insert queued instances; the rows created, in the items' order."""
    if bulk and len(items) >= _BULK_FROM:
        created = _insert_all(conn, workflow, items, now, tenant)
        if created is not None:
            return created
    return _insert_each(conn, workflow, items, now, tenant, skip_existing)


def _insert_all(
    conn: Any, workflow: str, items: Sequence[tuple[str, str | None]], now: float,
    tenant: str | None,
) -> list[InstanceRow] | None:
    """Every item in one ``executemany``; None (and nothing inserted) if an id was taken."""
    if len({id for id, _ in items}) != len(items):
        return None
    conn.execute("SAVEPOINT insert_all")
    inserted = conn.executemany(
        _INSERT, [(workflow, id, params, now, now, now, tenant) for id, params in items]
    ).rowcount
    if inserted != len(items):
        conn.execute("ROLLBACK TO insert_all")
        conn.execute("RELEASE insert_all")
        return None
    conn.execute("RELEASE insert_all")
    iids: dict[str, int] = {}
    for start in range(0, len(items), 500):  # stay under SQLite's parameter limit
        chunk = [id for id, _ in items[start:start + 500]]
        iids.update(conn.execute(
            f"SELECT id, iid FROM instances WHERE workflow = ? "
            f"AND id IN ({','.join('?' * len(chunk))})",
            (workflow, *chunk),
        ).fetchall())
    return [
        InstanceRow(iids[id], workflow, id, "queued", params, now, now, tenant=tenant)
        for id, params in items
    ]


def _insert_each(
    conn: Any, workflow: str, items: Sequence[tuple[str, str | None]], now: float,
    tenant: str | None, skip_existing: bool,
) -> list[InstanceRow]:
    created: list[InstanceRow] = []
    seen: set[str] = set()
    for id, params in items:
        if id in seen:
            if skip_existing:
                continue
            raise DuplicateInstanceError(f"instance id {id!r} appears twice in the batch")
        seen.add(id)
        inserted = conn.execute(
            _INSERT + " RETURNING iid", (workflow, id, params, now, now, now, tenant)
        ).fetchone()
        if inserted is None:
            if skip_existing:
                continue
            raise DuplicateInstanceError(
                f"an instance with id {id!r} already exists in workflow {workflow!r}; "
                "choose another id, or use get(id) to reach the existing one"
            )
        created.append(
            InstanceRow(int(inserted[0]), workflow, id, "queued", params, now, now, tenant=tenant)
        )
    return created
