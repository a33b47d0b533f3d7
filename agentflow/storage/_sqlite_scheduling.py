"""Claiming work in SQLite: per-workflow limits, woken instances first, tenants in turn, and
leases (renew, release). One writer at a time, so a claim's count and picks are consistent."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from ._connection import Connection
from ._fair import fair_candidates
from ._statements import _ACTIVE, _INSTANCE_COLUMNS, WAKE_HEAD_START, _instance
from .records import HistoryItem, InstanceRow, StartNow


class Scheduling:
    """The scheduling half of :class:`SqliteStorage` (claim, renew, release, next_wake)."""

    _db: Connection
    _history: Callable[[int, Sequence[HistoryItem]], None]
    # Appended to the claim's row reads; PostgreSQL skips rows other transactions hold.
    _SKIP_LOCKED = ""

    def _serialise(self, conn: Any, key: str) -> None:
        """Units that take ``key`` run one at a time. SQLite writes one unit at a time
        anyway; PostgreSQL takes a transaction-level advisory lock."""

    def _lock_instance(self, conn: Any, iid: int) -> None:
        """Hold the instance's row until the unit ends (PostgreSQL; SQLite has one writer)."""

    # -- scheduling -------------------------------------------------------------------------
    async def claim(
        self, worker: str, now: float, lease_now: float, lease_until: float,
        limits: dict[str, int], tenant_limits: dict[str, int | None] | None = None,
    ) -> list[InstanceRow]:
        # Most claims follow a run's end and find nothing to take: a read says so without
        # a write transaction of their own.
        if not await self._db.read(lambda conn: _claimable(conn, limits, now, lease_now)):
            return []

        def run(conn: sqlite3.Connection) -> list[InstanceRow]:
            claimed: list[InstanceRow] = []
            for workflow, limit in limits.items():
                claimed.extend(self._claim_workflow(
                    conn, workflow, limit, worker, now, lease_now, lease_until,
                    tenant_limits or {},
                ))
            return claimed

        return await self._db.write(run)

    def _startable(self, conn: Any, workflow: str, start: StartNow, now: float) -> int:
        """How many new instances may start at once: the workflow's free slots, or none while
        an instance waits for one (queued, or a due sleeper: they go first)."""
        self._serialise(conn, f"claim:{workflow}")  # counted as a claim counts
        waiting, running = conn.execute(_STARTABLE, (workflow, workflow, now, workflow,
                                                     *_ACTIVE)).fetchone()
        return 0 if waiting else max(0, start.limit - int(running))

    def _fair_candidates(
        self, conn: Any, workflow: str, free: int, now: float, quota: int | None,
    ) -> list[tuple[float, int]]:
        """Runnable instances taken round-robin across tenants (each tenant's oldest first),
        none beyond a tenant's quota of running instances (see ``_fair``)."""
        return fair_candidates(conn, workflow, free, now, quota)

    def _claim_workflow(
        self, conn: sqlite3.Connection, workflow: str, limit: int, worker: str, now: float,
        lease_now: float, lease_until: float, tenant_limits: dict[str, int | None],
    ) -> list[InstanceRow]:
        # Claims of one workflow run one at a time (a no-op for SQLite's single writer), so
        # the running count and the rows taken agree; rows another transaction holds are
        # skipped (PostgreSQL).
        self._serialise(conn, f"claim:{workflow}")
        skip = self._SKIP_LOCKED
        # Instances of lost workers first: they count against the limit already.
        lost = conn.execute(
            "SELECT iid FROM instances WHERE workflow = ? AND status IN (?, ?) "
            f"AND lease_until < ? ORDER BY ready_at LIMIT ?{skip}",
            (workflow, *_ACTIVE, lease_now, limit),
        ).fetchall()
        free = max(0, limit - _running(conn, workflow))
        ready: list[tuple[float, int]] = []
        if free and workflow in tenant_limits:
            ready = self._fair_candidates(conn, workflow, free, now, tenant_limits[workflow])
        elif free:
            # Two range scans of one index merged: queued by position, due sleepers by wake
            # time (a due sleeper is a woken instance: it gets the same head start).
            ready = [(float(k), int(i)) for k, i in conn.execute(
                f"SELECT sched, iid FROM instances WHERE workflow = ? AND status = 'queued' "
                f"ORDER BY sched LIMIT ?{skip}",
                (workflow, free),
            ).fetchall() + conn.execute(
                "SELECT sched - ?, iid FROM instances WHERE workflow = ? "
                f"AND status = 'waiting' AND sched <= ? ORDER BY sched LIMIT ?{skip}",
                (WAKE_HEAD_START, workflow, now, free),
            ).fetchall()]
            ready = sorted(ready)[:free]
        iids = [int(r[0]) for r in lost] + [r[1] for r in ready]  # fair order kept as chosen
        if not iids:
            return []
        rows: list[InstanceRow] = []
        for start in range(0, len(iids), 500):  # stay under SQLite's parameter limit
            chunk = iids[start:start + 500]
            marks = ','.join('?' * len(chunk))
            inbox = {iid for (iid,) in conn.execute(
                f"SELECT DISTINCT iid FROM inbox WHERE consumed_by IS NULL AND iid IN ({marks})",
                chunk,
            )}
            conn.execute(
                "UPDATE instances SET status = CASE WHEN status = 'waiting_for_pause' "
                "THEN status ELSE 'running' END, owner = ? || '#' || CAST(runs + 1 AS TEXT), "
                "lease_until = ?, woken = 1, wake_at = NULL, wait_types = NULL, "
                f"runs = runs + 1, updated_at = ? WHERE iid IN ({marks})",
                (worker, lease_until, now, *chunk),
            )
            rows.extend(_instance(r, r[0] in inbox) for r in conn.execute(
                f"SELECT {_INSTANCE_COLUMNS} FROM instances WHERE iid IN ({marks})", chunk,
            ).fetchall())
        position = {iid: n for n, iid in enumerate(iids)}
        rows.sort(key=lambda row: position[row.iid])  # keep the queue's order
        for row in rows:
            self._history(row.iid, [HistoryItem("instance.started", now, data={"run": row.runs})])
        return rows

    async def renew(
        self, worker: str, owners: dict[int, str], lease_until: float,
    ) -> dict[int, str]:
        def run(conn: sqlite3.Connection) -> dict[int, str]:
            out: dict[int, str] = {}
            for iid, owner in owners.items():
                row = conn.execute(
                    "UPDATE instances SET lease_until = ? WHERE iid = ? AND owner = ? "
                    "AND status IN (?, ?) RETURNING status",
                    (lease_until, iid, owner, *_ACTIVE),
                ).fetchone() or conn.execute(
                    "SELECT status FROM instances WHERE iid = ? AND owner = ?", (iid, owner)
                ).fetchone()
                out[iid] = "lost" if row is None else str(row[0])
            return out

        return await self._db.write(run)

    async def release(self, worker: str, iids: Sequence[int] | None, now: float) -> None:
        def run(conn: sqlite3.Connection) -> None:
            scope = "substr(owner, 1, ?) = ?"
            args: list[Any] = [len(worker) + 1, worker + "#"]
            if iids is not None:
                if not iids:
                    return
                scope += f" AND iid IN ({','.join('?' * len(iids))})"
                args.extend(iids)
            conn.execute(
                "UPDATE instances SET status = CASE status WHEN 'waiting_for_pause' THEN "
                "'paused' ELSE 'queued' END, paused_at = CASE status WHEN "
                "'waiting_for_pause' THEN ? ELSE paused_at END, owner = NULL, "
                f"lease_until = NULL, ready_at = ?, updated_at = ? WHERE {scope} "
                "AND status IN ('running', 'waiting_for_pause')",
                (now, now, now, *args),
            )
            conn.execute(f"UPDATE instances SET owner = NULL WHERE {scope}", args)

        await self._db.write(run)

    async def next_wake(self, workflows: Sequence[str]) -> float | None:
        if not workflows:
            return None
        marks = ",".join("?" * len(workflows))

        def run(conn: sqlite3.Connection) -> float | None:
            (when,) = conn.execute(
                f"SELECT min(sched) FROM instances WHERE status = 'waiting' "
                f"AND workflow IN ({marks})",
                list(workflows),
            ).fetchone()
            return None if when is None else float(when)

        return await self._db.read(run)


def _running(conn: Any, workflow: str) -> int:
    """How many instances of ``workflow`` hold a slot (running, or running to a pause)."""
    (count,) = conn.execute(
        "SELECT count(*) FROM instances WHERE workflow = ? AND status IN (?, ?)",
        (workflow, *_ACTIVE),
    ).fetchone()
    return int(count)


# Whether an instance of a workflow waits for a slot: queued, or a due sleeper (they go
# before new ones). Parameters: workflow, workflow, now.
_WAITING_FOR_SLOT = (
    "EXISTS (SELECT 1 FROM instances WHERE workflow = ? AND status = 'queued') "
    "OR EXISTS (SELECT 1 FROM instances WHERE workflow = ? AND status = 'waiting' "
    "AND sched <= ?)"
)

# One statement, one read transaction: whether an instance waits for a slot, and how many
# hold one.
_STARTABLE = (
    f"SELECT {_WAITING_FOR_SLOT}, "
    "(SELECT count(*) FROM instances WHERE workflow = ? AND status IN (?, ?))"
)

# Whether a claim could take anything of a workflow: an instance waiting for a slot, or one
# whose worker's lease ran out (what ``_claim_workflow`` looks for, before limits).
_CLAIMABLE = (
    f"SELECT {_WAITING_FOR_SLOT} "
    "OR EXISTS (SELECT 1 FROM instances WHERE workflow = ? AND status IN (?, ?) "
    "AND lease_until < ?)"
)


def _claimable(conn: Any, workflows: Iterable[str], now: float, lease_now: float) -> bool:
    """Whether a claim could take anything (one statement per workflow: a read transaction
    of its own costs SQLite two file-lock calls)."""
    return any(
        conn.execute(_CLAIMABLE, (workflow, workflow, now, workflow, *_ACTIVE, lease_now))
        .fetchone()[0]
        for workflow in workflows
    )
