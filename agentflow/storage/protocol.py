"""The one interface every storage backend implements.

Each method is one atomic unit of work. Methods that act for a running instance take the
owner token the claim gave it (``'<worker>#<run>'``, in ``InstanceRow.owner``) and fail with
:class:`LeaseLost` when that run no longer owns the instance, so that nothing depends on one
process owning the database and a stale run can never write into a newer one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import Protocol

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
)


class LeaseLost(Exception):
    """The worker no longer owns the instance (terminated, paused elsewhere, or lease expired)."""

    def __init__(self, status: str) -> None:
        super().__init__(status)
        self.status = status


Decide = Callable[[InstanceRow], Change]


class Storage(Protocol):
    async def open(self) -> None:
        """Connect, create or migrate the schema."""
        ...

    async def close(self) -> None: ...

    # -- instances ------------------------------------------------------------------------
    def create_instances(
        self, workflow: str, items: Sequence[tuple[str, str | None]], now: float, *,
        skip_existing: bool, tenant: str | None = None, start: StartNow | None = None,
    ) -> Awaitable[list[InstanceRow]]:
        """Insert queued instances (id, params). Returns (an awaitable of) the created rows:
        a future is best, done when the commit lands, since a creator waits for it. Without
        ``skip_existing`` an existing or repeated id raises ``DuplicateInstanceError`` and
        nothing is inserted. With ``start``, as many as the workflow's free slots allow (none
        if an instance is queued or due) are inserted running instead, claimed for
        ``start.worker`` (their rows have its owner token)."""
        ...

    async def get_instance(self, workflow: str, id: str) -> InstanceRow | None: ...

    async def get_instance_by_iid(self, iid: int) -> InstanceRow | None: ...

    async def get_instances(self, workflow: str, ids: Sequence[str]) -> list[InstanceRow]:
        """The instances with these ids (any order; unknown ids are left out)."""
        ...

    async def list_instances(
        self, *, workflow: str | None = None, id: str | None = None,
        status: str | None = None, limit: int = 100,
    ) -> list[InstanceRow]: ...

    async def transition(self, iid: int, decide: Decide) -> InstanceRow:
        """Read the row, apply ``decide(row)`` atomically; ``decide`` may raise to abort."""
        ...

    # -- scheduling -----------------------------------------------------------------------
    async def claim(
        self, worker: str, now: float, lease_now: float, lease_until: float,
        limits: dict[str, int], tenant_limits: dict[str, int | None] | None = None,
    ) -> list[InstanceRow]:
        """Take runnable instances (queued, waiting with ``wake_at <= now``, or leased by a
        worker whose lease ended before ``lease_now``) of the given workflows, at most
        ``limits[workflow]`` running at once per workflow, woken ones before new ones.
        ``now`` is the engine clock's time; leases are wall-clock time. Workflows named in
        ``tenant_limits`` share their slots round-robin across tenants, each tenant running at
        most its quota (None: no quota)."""
        ...

    async def renew(
        self, worker: str, owners: dict[int, str], lease_until: float,
    ) -> dict[int, str]:
        """Extend the lease of each instance in ``owners`` (iid -> owner token) that the token
        still holds; return each one's status, 'lost' where the token no longer holds."""
        ...

    async def release(self, worker: str, iids: Sequence[int] | None, now: float) -> None:
        """Give instances back (all of the worker's when ``iids`` is None) to be claimed again."""
        ...

    async def next_wake(self, workflows: Sequence[str]) -> float | None: ...

    # -- a run ----------------------------------------------------------------------------
    async def load_journal(self, iid: int) -> list[StepRecord]: ...

    def save_step(
        self, iid: int, owner: str, record: StepRecord, history: Sequence[HistoryItem],
        consume: int | None = None, *, earlier: Sequence[StepRecord] = (),
        entry: bool = False,
    ) -> Awaitable[str]:
        """Upsert ``earlier`` entries then ``record`` into the journal (and mark inbox event
        ``consume`` as taken by ``record``); resolve to the instance's status. Raises
        LeaseLost. ``entry``: ``record`` is a step finished at its first attempt, and its
        compact 'step.completed' entry (``compact_entry(record)``) follows ``history`` in
        the feed. (An awaitable rather than a coroutine function: a backend may hand back
        its commit's future directly, on the hot path of every step; ``async def`` fits.)"""
        ...

    async def append_history(
        self, iid: int, owner: str, history: Sequence[HistoryItem]
    ) -> None:
        """Append history for a run that still owns the instance. Raises LeaseLost."""
        ...

    async def suspend(
        self, iid: int, owner: str, now: float, wake_at: float | None,
        wait_types: Sequence[str], history: Sequence[HistoryItem], *,
        records: Sequence[StepRecord] = (),
    ) -> str:
        """End a run that waits, journaling ``records`` with it: 'waiting', 'paused' if a
        pause was requested, or 'queued' if a matching event arrived meanwhile or the wake
        time passed. Raises LeaseLost."""
        ...

    async def finish(
        self, iid: int, owner: str, now: float, status: str, output: str | None,
        error: tuple[str, str] | None, history: Sequence[HistoryItem], *,
        records: Sequence[StepRecord] = (),
    ) -> None:
        """End a run as complete or errored, journaling ``records`` with it. Raises
        LeaseLost."""
        ...

    # -- events ---------------------------------------------------------------------------
    async def deliver_event(
        self, iid: int, type: str, payload: str | None, now: float,
    ) -> InboxEvent | None:
        """Buffer an event; wake the instance if it waits for this type. None, and nothing
        written, when the instance has finished (or does not exist)."""
        ...

    async def next_inbox_event(
        self, iid: int, type: str, *, skip: Collection[int] = (),
    ) -> InboxEvent | None:
        """The oldest unconsumed event of ``type`` for the instance, passing over the events
        whose seq is in ``skip`` (being taken by another wait of the same run)."""
        ...

    async def read_history(self, iid: int, after: int = 0, limit: int = 1000) -> list[HistoryRow]:
        ...

    # -- approvals ------------------------------------------------------------------------
    async def pending_approvals(
        self, *, workflow: str | None = None, tenant: str | None = None,
        iid: int | None = None, requested_before: float | None = None, limit: int = 100,
        now: float = float("-inf"),
    ) -> list[ApprovalRow]:
        """Open approval gates, oldest first, each with its latest request: a wait journaled
        as waiting, whose decision is not in the inbox yet and whose deadline is after
        ``now``."""
        ...

    async def decide_approval(
        self, iid: int, gate: str, count: int, payload: str, version: str | None,
        check_version: bool, now: float,
    ) -> str:
        """Deliver a decision to gate (``gate``, ``count``) atomically; 'ok' or why not:
        'unknown', 'decided', 'expired' (its deadline is not after ``now``), 'version'
        (``check_version`` and another version asked),
        'stale' (the instance was upgraded or restarted since the request), 'finished' (the
        instance has finished: nothing is written)."""
        ...

    # -- tenant code ----------------------------------------------------------------------
    async def put_code(
        self, tenant: str, name: str, sha256: str, source: str, now: float
    ) -> CodeRow:
        """Store a version (idempotent per (tenant, name, sha256)); versions count from 1."""
        ...

    async def get_code(self, tenant: str, sha256: str) -> CodeRow | None: ...

    async def code_versions(self, tenant: str, name: str) -> list[CodeRow]:
        """Oldest first."""
        ...
