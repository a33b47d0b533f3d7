"""SQLite statements for approval gates: the open ones, and deciding one atomically."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence

from .records import ApprovalRow, HistoryItem, InboxEvent

# An open gate: its wait is journaled as waiting, no decision waits in the inbox for it, its
# deadline has not passed; shown with its latest request (a restart or an upgrade asks again).
_OPEN = (
    "SELECT i.iid, i.workflow, i.id, i.tenant, s.name, s.count, h.at, h.data "
    "FROM steps s JOIN instances i ON i.iid = s.iid "
    "JOIN history h ON h.seq = (SELECT max(r.seq) FROM history r WHERE r.iid = s.iid "
    "     AND r.type = 'approval.requested' AND r.step = s.name AND r.count = s.count) "
    "WHERE s.kind = 'wait' AND s.state = 'waiting' AND s.event_type LIKE 'approval:%' "
    "  AND i.status NOT IN ('complete', 'errored', 'terminated') "
    "  AND NOT EXISTS (SELECT 1 FROM inbox b WHERE b.iid = s.iid AND b.type = s.event_type "
    "                  AND b.consumed_by IS NULL) "
    "  AND (s.wake_at IS NULL OR s.wake_at > ?)"
)


def pending(conn: sqlite3.Connection, *, workflow: str | None, tenant: str | None,
            iid: int | None, requested_before: float | None, limit: int,
            now: float) -> list[ApprovalRow]:
    sql, args = _OPEN, list[object]([now])
    for column, value in (("i.workflow", workflow), ("i.tenant", tenant), ("i.iid", iid)):
        if value is not None:
            sql += f" AND {column} = ?"
            args.append(value)
    if requested_before is not None:
        sql += " AND h.at <= ?"
        args.append(requested_before)
    sql += " ORDER BY h.at, h.seq LIMIT ?"
    args.append(limit)
    return [ApprovalRow(*row) for row in conn.execute(sql, args)]


def decide(
    conn: sqlite3.Connection, iid: int, gate: str, count: int, payload: str,
    version: str | None, check_version: bool, now: float,
    deliver: Callable[[sqlite3.Connection, int, str, str | None, float], InboxEvent | None],
    history: Callable[[int, Sequence[HistoryItem]], None],
) -> str:
    """Deliver a decision to an open gate: 'ok', or why not: 'unknown' (no such gate),
    'decided' (decided or timed out already), 'expired' (its deadline passed),
    'version' (another version asked),
    'stale' (the instance's code changed since the request), 'finished' (the instance
    finished since its caller looked)."""
    step = conn.execute(
        "SELECT state, event_type, wake_at FROM steps WHERE iid = ? AND name = ? AND count = ? "
        "AND kind = 'wait'", (iid, gate, count),
    ).fetchone()
    request = conn.execute(
        "SELECT seq, data FROM history WHERE iid = ? AND type = 'approval.requested' "
        "AND step = ? AND count = ? ORDER BY seq DESC LIMIT 1", (iid, gate, count),
    ).fetchone()
    if step is None or request is None:
        return "unknown"
    state, event_type, deadline = step
    if deadline is not None and now >= deadline:
        return "expired"  # timed out, even if no worker has recorded it yet
    if state != "waiting" or conn.execute(
        "SELECT 1 FROM inbox WHERE iid = ? AND type = ? AND consumed_by IS NULL",
        (iid, event_type),
    ).fetchone():
        return "decided"
    asked = json.loads(request[1] or "{}").get("version")
    if check_version and version != asked:
        return "version"
    if conn.execute(
        "SELECT 1 FROM history WHERE iid = ? AND seq > ? AND type IN "
        "('instance.upgraded', 'instance.restarted') LIMIT 1", (iid, request[0]),
    ).fetchone():
        return "stale"
    if deliver(conn, iid, event_type, payload, now) is None:
        return "finished"  # (the delivery checks that, and writes nothing)
    decided = json.loads(payload)
    history(iid, [HistoryItem("approval.decided", now, gate, {
        k: decided.get(k) for k in ("approved", "by", "comment", "edited", "version")
    }, count)])
    return "ok"
