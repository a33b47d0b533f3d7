"""Statements and row helpers both backends share: the SQL where SQLite and PostgreSQL agree,
written with ``?`` placeholders (the PostgreSQL connection translates them)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from .._codec import compact_encoder
from .protocol import LeaseLost
from .records import HistoryItem, InstanceRow, StepRecord

SCHEMA_VERSION = 4
WAKE_HEAD_START = 60.0  # seconds; must match the sched column in schema.sql
_ACTIVE = ("running", "waiting_for_pause")
_INSTANCE_COLUMNS = (
    "iid, workflow, id, status, params, created_at, updated_at, output, error_name, "
    "error_message, wake_at, wait_types, paused_at, owner, lease_until, runs, tenant"
)
_CODE_COLUMNS = "tenant, name, sha256, source, created_at, version"
_STEP_COLUMNS = (
    "name, count, kind, state, started_at, result, error_name, error_message, error_detail, "
    "attempts, wake_at, event_type, finished_at, seq"
)


def _instance(row: Sequence[Any], inbox_pending: bool = True) -> InstanceRow:
    values = list(row)
    values[11] = tuple(json.loads(values[11])) if values[11] else ()
    values.append(inbox_pending)
    return InstanceRow(*values)


# The columns in StepRecord's field order: a record's values are ``(iid, *record[:13])``.
_UPSERT_STEP = (
    "INSERT INTO steps (iid, name, count, kind, state, started_at, result, error_name, "
    "error_message, error_detail, attempts, wake_at, event_type, finished_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (iid, name, count) DO UPDATE SET state = excluded.state, "
    "result = excluded.result, error_name = excluded.error_name, "
    "error_message = excluded.error_message, error_detail = excluded.error_detail, "
    "attempts = excluded.attempts, wake_at = excluded.wake_at, "
    "event_type = excluded.event_type, finished_at = excluded.finished_at"
)

# The common case in one statement: journal the step if the run still owns a running instance.
_UPSERT_STEP_IF_RUNNING = (
    _UPSERT_STEP[:_UPSERT_STEP.index("VALUES")]
    + "SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM instances "
    "WHERE iid = ? AND owner = ? AND status = 'running') "
    + _UPSERT_STEP[_UPSERT_STEP.index("ON CONFLICT"):]
)
_RECORD_FIELDS = len(StepRecord._fields) - 1  # all but seq, which the backend assigns


def _step_values(iid: int, r: StepRecord) -> tuple[Any, ...]:
    return (iid, *r[:_RECORD_FIELDS])


def _upsert_steps(conn: Any, iid: int, records: Sequence[StepRecord]) -> None:
    if records:
        conn.executemany(_UPSERT_STEP, [_step_values(iid, r) for r in records])


def _save_step_checked(
    conn: Any, iid: int, owner: str, record: StepRecord, consume: int | None,
    earlier: Sequence[StepRecord],
) -> str:
    """Journal ``earlier`` then ``record`` for the run that owns the instance, taking inbox
    event ``consume``; the instance's status. Every check comes before the first write."""
    status = _owned_status(conn, iid, owner)
    if consume is not None and conn.execute(
        "SELECT 1 FROM inbox WHERE seq = ? AND iid = ? AND consumed_by IS NULL",
        (consume, iid),
    ).fetchone() is None:
        raise LeaseLost("event already consumed")
    _upsert_steps(conn, iid, earlier)
    if consume is None:
        conn.execute(_UPSERT_STEP, _step_values(iid, record))
    else:
        (seq,) = conn.execute(
            _UPSERT_STEP + " RETURNING seq", _step_values(iid, record)
        ).fetchone()
        conn.execute("UPDATE inbox SET consumed_by = ? WHERE seq = ?", (seq, consume))
    return status


_dumps = compact_encoder()


_INSERT_HISTORY = (
    "INSERT INTO history (iid, at, type, step, count, attempt, since, data) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)


def _history_row(iid: int, h: HistoryItem) -> tuple[Any, ...]:
    return (iid, h.at, h.type, h.step, h.count, h.attempt, h.since,
            _dumps(h.data) if h.data else None)


def _history_rows(iid: int, items: Sequence[HistoryItem]) -> list[tuple[Any, ...]]:
    """The parameters of ``_INSERT_HISTORY`` for ``items`` (encoding their data)."""
    return [_history_row(iid, h) for h in items]


def _owned_status(conn: Any, iid: int, owner: str) -> str:
    row = conn.execute("SELECT status, owner FROM instances WHERE iid = ?", (iid,)).fetchone()
    if row is None:
        raise LeaseLost("unknown")
    status, current = row
    if current != owner or status not in _ACTIVE:
        raise LeaseLost(status)
    return str(status)
