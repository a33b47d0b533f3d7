"""Fair claims: free slots go round-robin across tenants, each tenant's oldest first, none
past a tenant's quota, at the cost of index seeks rather than a scan of the whole queue.

A tenant's n-th candidate is worth (its running instances + n): the tenant with the fewest
running goes next, ties by queue position. Only the heads of the tenants' queues are read to
choose (one seek per tenant, inside one statement), then at most ``free`` rows of each chosen
tenant. Both backends run these statements (``?`` placeholders; the index on
(workflow, status, tenant, sched) serves every one of them).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from typing import Any

from ._statements import _ACTIVE, WAKE_HEAD_START

# Every tenant with queued work, and the queue position of its oldest queued instance.
_HEADS = (
    "WITH RECURSIVE t(tenant) AS ("
    " SELECT (SELECT tenant FROM instances WHERE workflow = ? AND status = 'queued'"
    "         AND tenant IS NOT NULL ORDER BY tenant LIMIT 1)"
    " UNION ALL"
    " SELECT (SELECT i.tenant FROM instances i WHERE i.workflow = ? AND i.status = 'queued'"
    "         AND i.tenant > t.tenant ORDER BY i.tenant LIMIT 1) FROM t"
    " WHERE t.tenant IS NOT NULL) "
    "SELECT t.tenant, (SELECT min(sched) FROM instances WHERE workflow = ? AND status = 'queued'"
    " AND tenant = t.tenant) FROM t WHERE t.tenant IS NOT NULL"
)


def fair_candidates(conn: Any, workflow: str, free: int, now: float,
                    quota: int | None) -> list[tuple[float, int]]:
    running: dict[str | None, int] = {
        tenant: int(n) for tenant, n in conn.execute(
            "SELECT tenant, count(*) FROM instances WHERE workflow = ? AND status IN (?, ?) "
            "AND tenant IS NOT NULL GROUP BY tenant", (workflow, *_ACTIVE))
    }
    heads = _heads_from_the_front(conn, workflow, free, running)
    if heads is None:
        heads = {tenant: float(key) for tenant, key in conn.execute(_HEADS, (workflow,) * 3)}
    untenanted = conn.execute(
        "SELECT min(sched) FROM instances WHERE workflow = ? AND status = 'queued' "
        "AND tenant IS NULL", (workflow,)).fetchone()
    if untenanted and untenanted[0] is not None:
        heads[None] = float(untenanted[0])
    # Woken instances (due timers) count with their head start, in their tenant's turn.
    due: dict[str | None, list[tuple[float, int]]] = {}
    for key, iid, tenant in conn.execute(
            "SELECT sched - ?, iid, tenant FROM instances WHERE workflow = ? "
            "AND status = 'waiting' AND sched <= ? ORDER BY sched LIMIT ?",
            (WAKE_HEAD_START, workflow, now, free)):
        due.setdefault(tenant, []).append((float(key), int(iid)))
    streams: dict[str | None, _Stream] = {}
    queue: list[tuple[int, float, int, str | None]] = []
    for order, tenant in enumerate(sorted({*heads, *due}, key=lambda t: (t is None, t or ""))):
        keys = [heads[tenant]] if tenant in heads else []
        if tenant in due:
            keys.append(due[tenant][0][0])
        first = min(keys)
        cost = running.get(tenant, 0) + 1
        if quota is None or cost <= quota:
            queue.append((cost, first, order, tenant))
    heapq.heapify(queue)
    picked: list[tuple[float, int]] = []
    while queue and len(picked) < free:
        cost, _, order, tenant = heapq.heappop(queue)
        stream = streams.get(tenant)
        if stream is None:
            stream = streams[tenant] = _Stream(conn, workflow, tenant, free, due.get(tenant, []))
        taken = next(stream, None)
        if taken is None:
            continue
        picked.append(taken)
        following = stream.peek()
        if following is not None and (quota is None or cost + 1 <= quota):
            heapq.heappush(queue, (cost + 1, following, order, tenant))
    return picked


def _heads_from_the_front(conn: Any, workflow: str, free: int,
                          running: dict[str | None, int]) -> dict[str | None, float] | None:
    """The heads that can matter, read from the front of the queue: walking it in order, a
    tenant's first row is its head, so once ``free`` tenants with nothing running are found,
    no tenant further back can be chosen before them (each is worth 1, later). Tenants with
    instances running get their own seek. None when the front is one tenant's flood: then
    every tenant's head is read (``_HEADS``)."""
    heads: dict[str | None, float] = {}
    idle = 0
    scanned = 0
    # Room for the queues of running tenants too (they are at the front when they were
    # first); bounded, since past it the full read is cheaper.
    budget = min(64 + 16 * (free + len(running)), 4096)
    for key, tenant in conn.execute(
            "SELECT sched, tenant FROM instances WHERE workflow = ? AND status = 'queued' "
            "AND tenant IS NOT NULL ORDER BY sched LIMIT ?", (workflow, budget)):
        scanned += 1
        if tenant in heads:
            continue
        heads[tenant] = float(key)
        if tenant not in running:
            idle += 1
            if idle >= free:
                break
    else:
        if scanned == budget:  # stopped by the budget, not by the end of the queue
            return None
    for tenant in running:
        if tenant not in heads:
            (key,) = conn.execute(
                "SELECT min(sched) FROM instances WHERE workflow = ? AND status = 'queued' "
                "AND tenant = ?", (workflow, tenant)).fetchone()
            if key is not None:
                heads[tenant] = float(key)
    return heads


class _Stream:
    """One tenant's candidates in queue order: its due woken instances and its queued ones
    (at most ``limit`` of these, read on first use)."""

    def __init__(self, conn: Any, workflow: str, tenant: str | None, limit: int,
                 due: list[tuple[float, int]]) -> None:
        where = "tenant IS NULL" if tenant is None else "tenant = ?"
        args: tuple[Any, ...] = (workflow,) if tenant is None else (workflow, tenant)
        queued = [(float(k), int(i)) for k, i in conn.execute(
            f"SELECT sched, iid FROM instances WHERE workflow = ? AND status = 'queued' AND "
            f"{where} ORDER BY sched LIMIT ?", (*args, limit))]
        self._items = sorted(queued + due)
        self._next = 0

    def __iter__(self) -> Iterator[tuple[float, int]]:
        return self

    def __next__(self) -> tuple[float, int]:
        if self._next >= len(self._items):
            raise StopIteration
        self._next += 1
        return self._items[self._next - 1]

    def peek(self) -> float | None:
        return self._items[self._next][0] if self._next < len(self._items) else None
