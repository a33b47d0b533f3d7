"""Statements and row helpers both backends share: the SQL where SQLite and PostgreSQL agree,
written with ``?`` placeholders (the PostgreSQL connection translates them)."""

from __future__ import annotations

import functools
import json
import operator
from collections.abc import Sequence
from itertools import compress, repeat
from typing import Any

from .._codec import compact_encoder
from .protocol import LeaseLost
from .records import HistoryItem, InstanceRow, StepRecord

SCHEMA_VERSION = 6
WAKE_HEAD_START = 60.0  # seconds; must match the sched column in schema.sql
_ACTIVE = ("running", "waiting_for_pause")
FINISHED_STATUSES = ("complete", "errored", "terminated")
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


# Journal entries are upserts: the columns in StepRecord's field order, then the conflict.
_STEP_INSERT = (
    "INSERT INTO steps (iid, name, count, kind, state, started_at, result, error_name, "
    "error_message, error_detail, attempts, wake_at, event_type, finished_at) "
)
_STEP_CONFLICT = (
    "ON CONFLICT (iid, name, count) DO UPDATE SET state = excluded.state, "
    "result = excluded.result, error_name = excluded.error_name, "
    "error_message = excluded.error_message, error_detail = excluded.error_detail, "
    "attempts = excluded.attempts, wake_at = excluded.wake_at, "
    "event_type = excluded.event_type, finished_at = excluded.finished_at"
)
_RECORD_FIELDS = len(StepRecord._fields) - 1  # all but seq, which the backend assigns
# The if-running form (SQLite): the row's iid is looked up among the instances the run still
# owns and running; when it is not, the iid is NULL and the row is skipped (OR IGNORE covers
# only that NOT NULL check; conflicts on the key still update). Writing the row from a
# SELECT instead would cost the statement a journal of its own, a third of its time.
_IF_RUNNING_IID = (
    "(SELECT iid FROM instances WHERE iid = ? AND owner = ? AND status = 'running')"
)


# Binding None costs the sqlite3 module about a microsecond per parameter (it looks for an
# adapter first), more than the rest of a row: a record's empty columns are spelled NULL in
# the statement instead, one statement per shape (which columns are empty; a handful occur).
@functools.cache
def _upsert_sql(empty: tuple[bool, ...], if_running: bool = False) -> str:
    """The upsert of records whose columns ``empty`` says are None; ``if_running``: written
    only if the run still owns a running instance (parameters iid, owner, then the rest)."""
    marks = ", ".join("NULL" if none else "?" for none in empty)
    if if_running:
        return (f"{_STEP_INSERT.replace('INSERT', 'INSERT OR IGNORE', 1)}"
                f"VALUES ({_IF_RUNNING_IID}, {marks}) {_STEP_CONFLICT}")
    return f"{_STEP_INSERT}VALUES (?, {marks}) {_STEP_CONFLICT}"


def _step_statement(
    iid: int, r: StepRecord, owner: str | None = None
) -> tuple[str, tuple[Any, ...]]:
    """The upsert that journals ``r`` and its parameters; with ``owner``, the if-running
    form (its rowcount is 0 when the run no longer owns a running instance)."""
    fields = r[:_RECORD_FIELDS]
    empty = tuple(map(operator.is_, fields, repeat(None)))
    present = compress(fields, map(operator.is_not, fields, repeat(None)))
    if owner is None:
        return _upsert_sql(empty), (iid, *present)
    return _upsert_sql(empty, True), (iid, owner, *present)


# The commonest entry, a finished step with no error, wait or timer, has a statement of its
# own, chosen and filled without looking at every column (``_done_values``). It is the first
# attempt's, so its journal row also stands for its entry in the feed, at place ``hseq``
# (SQLite; see ``_feed``), the last parameter.
_UPSERT_DONE_IF_RUNNING = (
    _upsert_sql(
        tuple(name in ("error_name", "error_message", "error_detail", "wake_at", "event_type")
              for name in StepRecord._fields[:_RECORD_FIELDS]),
        if_running=True,
    )
    .replace("finished_at) VALUES", "finished_at, hseq) VALUES", 1)
    .replace(", ?) ON CONFLICT", ", ?, ?) ON CONFLICT", 1)
    + ", hseq = excluded.hseq"
)


def _is_done_shape(r: StepRecord) -> bool:
    """Whether ``_UPSERT_DONE_IF_RUNNING`` can write ``r``: every column it spells NULL is."""
    return (r.error_name is None and r.error_message is None and r.error_detail is None
            and r.wake_at is None and r.event_type is None)


def _done_values(iid: int, r: StepRecord, owner: str) -> tuple[Any, ...]:
    return (iid, owner, r.name, r.count, r.kind, r.state, r.started_at, r.result, r.attempts,
            r.finished_at)


def _upsert_steps(conn: Any, iid: int, records: Sequence[StepRecord]) -> None:
    for record in records:  # one at a time: each record's shape has its own statement
        conn.execute(*_step_statement(iid, record))


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
    sql, values = _step_statement(iid, record)
    if consume is None:
        conn.execute(sql, values)
    else:
        (seq,) = conn.execute(sql + " RETURNING seq", values).fetchone()
        conn.execute("UPDATE inbox SET consumed_by = ? WHERE seq = ?", (seq, consume))
    return status


_dumps = compact_encoder()


# Empty columns travel as values no entry has (no step is named '', counts and attempts
# start at 1, data is a JSON object) and become NULL in the statement: binding None costs
# more than the rest of the row (see _UPSERT_DONE_IF_RUNNING), and one statement for every
# row keeps an instance's entries in the order they were written.
_INSERT_HISTORY = (
    "INSERT INTO history (iid, at, type, step, count, attempt, since, data) "
    "VALUES (?, ?, ?, NULLIF(?, ''), NULLIF(?, 0), NULLIF(?, 0), ?, NULLIF(?, ''))"
)


def _history_row(iid: int, h: HistoryItem) -> tuple[Any, ...]:
    step, count, attempt = h.step, h.count, h.attempt
    return (iid, h.at, h.type, "" if step is None else step, 0 if count is None else count,
            0 if attempt is None else attempt, h.since, _dumps(h.data) if h.data else "")


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
