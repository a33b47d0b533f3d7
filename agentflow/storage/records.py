"""Rows exchanged between the engine and a storage backend. JSON values travel as text."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple


@dataclass(frozen=True, slots=True)
class InstanceRow:
    iid: int
    workflow: str
    id: str
    status: str
    params: str | None
    created_at: float
    updated_at: float
    output: str | None = None
    error_name: str | None = None
    error_message: str | None = None
    wake_at: float | None = None
    wait_types: tuple[str, ...] = ()
    paused_at: float | None = None
    owner: str | None = None
    lease_until: float | None = None
    runs: int = 0
    tenant: str | None = None
    # Whether unconsumed events may be in the instance's inbox. A claim reads it exactly, so
    # a run that knows its inbox was empty skips reading it before its first wait (an event
    # that arrives while it runs is found when the run suspends); anyone else assumes True.
    inbox_pending: bool = field(default=True, compare=False)


@dataclass(frozen=True, slots=True)
class StartNow:
    """Asks ``create_instances`` to start new instances at once, as a claim by ``worker``
    would, when their workflow has free slots (of ``limit``) and no instance is waiting for
    one (woken instances go first): they are inserted running, leased until
    ``lease_until``, and the worker runs them without claiming them."""

    worker: str
    lease_until: float
    limit: int


class StepRecord(NamedTuple):
    """One journal entry: a step occurrence and its outcome so far.

    ``state`` is completed or errored (final), or sleeping, waiting, retrying (pending, with
    ``wake_at`` the sleep's end, the wait's deadline or the next attempt's time).

    An immutable NamedTuple rather than a frozen dataclass: one or more are built for every
    step, and a frozen dataclass's ``__init__`` (a guarded setattr per field) costs several
    times a tuple's.
    """

    name: str
    count: int  # type: ignore[assignment]  # the field shadows tuple.count, on purpose
    kind: str  # do | sleep | wait
    state: str
    started_at: float
    result: str | None = None
    error_name: str | None = None
    error_message: str | None = None
    error_detail: str | None = None
    attempts: int = 0
    wake_at: float | None = None
    event_type: str | None = None
    finished_at: float | None = None
    seq: int = 0  # journal order, assigned by the backend


class HistoryItem(NamedTuple):
    """An entry to append to an instance's history feed (a NamedTuple: see StepRecord)."""

    type: str
    at: float
    step: str | None = None
    data: Mapping[str, Any] | None = None  # None: no data
    # The step occurrence, kept out of ``data`` so that the hot path skips JSON (the field
    # shadows tuple.count, on purpose).
    count: int | None = None  # type: ignore[assignment]
    attempt: int | None = None
    since: float | None = None  # set on a compact 'step.completed': when the step started


def compact_entry(record: StepRecord) -> HistoryItem:
    """The compact 'step.completed' entry of a step finished at its first attempt."""
    at = record.started_at if record.finished_at is None else record.finished_at
    return HistoryItem("step.completed", at, record.name, None, record.count, 1,
                       record.started_at)


@dataclass(frozen=True, slots=True)
class HistoryRow:
    seq: int
    iid: int
    workflow: str
    id: str
    type: str
    at: float
    step: str | None
    data: str | None
    count: int | None = None
    attempt: int | None = None
    since: float | None = None


@dataclass(frozen=True, slots=True)
class ApprovalRow:
    """An open approval gate: its instance, the gate (step name, occurrence) and the
    request's 'approval.requested' history data."""

    iid: int
    workflow: str
    id: str
    tenant: str | None
    gate: str
    count: int
    at: float
    data: str | None


@dataclass(frozen=True, slots=True)
class InboxEvent:
    seq: int
    type: str
    payload: str | None
    at: float


@dataclass(frozen=True, slots=True)
class Change:
    """What a transition does to an instance row: new column values and history to append.

    ``reset_journal_from`` deletes journal entries with seq >= it (and releases the events
    they consumed); 0 deletes the whole journal. ``shift_timers`` moves the wake times of
    pending journal entries (sleeps, waits, retries) later by that many seconds.
    """

    fields: dict[str, Any]
    history: tuple[HistoryItem, ...] = ()
    reset_journal_from: int | None = None
    shift_timers: float | None = None


@dataclass(frozen=True, slots=True)
class CodeRow:
    """One registered version of a tenant's plan."""

    tenant: str
    name: str
    sha256: str
    source: str
    created_at: float
    version: int
