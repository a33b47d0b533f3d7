"""Lifecycle operations as pure decisions on an instance row, shared by every backend.

Each function returns a :class:`Change` for ``Storage.transition`` to apply atomically, or
raises :class:`InvalidStateError` saying why the operation is not allowed now.
"""

from __future__ import annotations

from .errors import InvalidStateError
from .status import FINISHED
from .storage import Change, HistoryItem, InstanceRow

_CLEAR_RUN = {"owner": None, "lease_until": None, "wake_at": None, "wait_types": None}


def _refuse_finished(row: InstanceRow, action: str) -> None:
    if row.status in FINISHED:
        raise InvalidStateError(
            f"cannot {action} instance {row.id!r}: it is already {row.status}; "
            "use restart() to run it again"
        )


def pause(row: InstanceRow, now: float) -> Change:
    _refuse_finished(row, "pause")
    if row.status in ("paused", "waiting_for_pause"):
        return Change({})
    if row.status == "running":
        return Change(
            {"status": "waiting_for_pause", "updated_at": now},
            (HistoryItem("instance.waiting_for_pause", now),),
        )
    return Change(
        {"status": "paused", "paused_at": now, "updated_at": now, **_CLEAR_RUN},
        (HistoryItem("instance.paused", now),),
    )


def resume(row: InstanceRow, now: float) -> Change:
    _refuse_finished(row, "resume")
    if row.status == "waiting_for_pause":
        return Change(
            {"status": "running", "updated_at": now}, (HistoryItem("instance.resumed", now),)
        )
    if row.status != "paused":
        return Change({})
    paused_for = max(0.0, now - row.paused_at) if row.paused_at is not None else 0.0
    return Change(
        {"status": "queued", "paused_at": None, "ready_at": now, "updated_at": now, **_CLEAR_RUN},
        (HistoryItem("instance.resumed", now, data={"paused_for": paused_for}),),
        shift_timers=paused_for,
    )


def terminate(row: InstanceRow, now: float) -> Change:
    _refuse_finished(row, "terminate")
    return Change(
        {"status": "terminated", "paused_at": None, "updated_at": now, **_CLEAR_RUN},
        (HistoryItem("instance.terminated", now),),
    )


def restart(row: InstanceRow, now: float, from_seq: int, from_step: str | None) -> Change:
    return Change(
        {
            "status": "queued", "output": None, "error_name": None, "error_message": None,
            "paused_at": None, "ready_at": now, "updated_at": now, **_CLEAR_RUN,
        },
        (HistoryItem("instance.restarted", now, data={"from_step": from_step}),),
        reset_journal_from=from_seq,
    )
