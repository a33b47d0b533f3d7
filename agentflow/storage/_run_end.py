"""How a run ends in the database: it hibernates or queues again (suspend), or its instance
finishes. The statements both backends share, with the usual cases in statements of their own
(a plain UPDATE costs less than the general one that decides every case)."""

from __future__ import annotations

from typing import Any

# Suspending a run: hibernate, queue again, or (a pause was asked for) pause; every CASE reads
# the row as it was. Parameters: status, wake_at, wait_types, paused_at, ready_at, updated_at,
# iid, owner and the two active statuses. (The casts type the parameters for PostgreSQL.)
_SUSPEND = (
    "UPDATE instances SET "
    "status = CASE status WHEN 'waiting_for_pause' THEN 'paused' ELSE ? END, "
    "wake_at = CASE status WHEN 'waiting_for_pause' THEN NULL "
    "ELSE CAST(? AS DOUBLE PRECISION) END, "
    "wait_types = CASE status WHEN 'waiting_for_pause' THEN NULL ELSE ? END, "
    "paused_at = CASE status WHEN 'waiting_for_pause' THEN CAST(? AS DOUBLE PRECISION) "
    "ELSE NULL END, "
    "owner = NULL, lease_until = NULL, ready_at = ?, updated_at = ? "
    "WHERE iid = ? AND owner = ? AND status IN (?, ?) RETURNING status"
)
# The usual case first, for a run still running (no pause asked for): no CASE and no
# RETURNING (which costs SQLite a temporary table, half the statement's time); when it
# changes no row, _SUSPEND decides and says why. Parameters: [wake_at,] [wait_types,]
# ready_at, updated_at, iid, owner; the empty columns spelled NULL.
_PARK = (
    "UPDATE instances SET status = '{}', wake_at = {}, wait_types = {}, paused_at = NULL, "
    "owner = NULL, lease_until = NULL, ready_at = ?, updated_at = ? "
    "WHERE iid = ? AND owner = ? AND status = 'running'"
)
_PARK_QUEUED = _PARK.format("queued", "NULL", "NULL")
_PARK_WAITING = _PARK.format("waiting", "?", "?")
_PARK_WAITING_FOREVER = _PARK.format("waiting", "NULL", "?")


# An instance's end, with its error or (the usual case) none: error columns spelled NULL
# rather than bound as None, which costs the sqlite3 module more than the rest of the row.
_FINISH = (
    "UPDATE instances SET status = ?, output = ?, error_name = {}, owner = NULL, "
    "lease_until = NULL, wake_at = NULL, wait_types = NULL, updated_at = ? "
    "WHERE iid = ? AND owner = ? AND status IN (?, ?)"
)
_FINISH_DONE = _FINISH.format("NULL, error_message = NULL")
_FINISH_FAILED = _FINISH.format("?, error_message = ?")


def _park(conn: Any, iid: int, owner: str, new: tuple[str, float | None, str | None],
          now: float) -> bool:
    """Queue or hibernate an instance its run still owns and runs, in the usual way; False
    (and nothing written) otherwise."""
    status, wake_at, types = new
    if status == "queued":
        return bool(conn.execute(_PARK_QUEUED, (now, now, iid, owner)).rowcount)
    if wake_at is None:
        return bool(conn.execute(_PARK_WAITING_FOREVER, (types, now, now, iid, owner)).rowcount)
    return bool(conn.execute(_PARK_WAITING, (wake_at, types, now, now, iid, owner)).rowcount)
