"""Conformance suite for the Storage Protocol: every backend must pass it.

Each test calls the Protocol directly (no engine), with explicit times: ``now`` is the
engine clock's time, ``lease_now``/``lease_until`` are wall-clock lease times.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections import Counter

import pytest

from agentflow import transitions
from agentflow.errors import DuplicateInstanceError, InvalidStateError, StorageError
from agentflow.storage import (
    Change,
    HistoryItem,
    HistoryRow,
    InboxEvent,
    InstanceRow,
    LeaseLost,
    StartNow,
    StepRecord,
    Storage,
)
from tests.storage.conftest import Backend, Stores

T0 = 1_000.0  # engine clock
L0 = 50_000.0  # wall clock, for leases
WF = "wf"
OTHER = "other"


# -- helpers ---------------------------------------------------------------------------------
def params(id: str) -> str:
    return json.dumps({"id": id})


async def create(
    storage: Storage, *ids: str, workflow: str = WF, now: float = T0
) -> list[InstanceRow]:
    return await storage.create_instances(
        workflow, [(i, params(i)) for i in ids], now, skip_existing=False
    )


async def claim(
    storage: Storage, worker: str = "w1", *, now: float = T0, lease_now: float = L0,
    lease_for: float = 30.0, limits: dict[str, int] | None = None,
) -> list[InstanceRow]:
    return await storage.claim(
        worker, now, lease_now, lease_now + lease_for, {WF: 100} if limits is None else limits
    )


async def start(
    storage: Storage, id: str = "a", worker: str = "w1", *, now: float = T0,
    lease_now: float = L0, lease_for: float = 30.0,
) -> InstanceRow:
    """Create an instance and claim it (nothing else may be queued in WF)."""
    (row,) = await create(storage, id, now=now)
    claimed = await claim(storage, worker, now=now, lease_now=lease_now, lease_for=lease_for)
    assert [r.iid for r in claimed] == [row.iid]
    return claimed[0]


async def current(storage: Storage, row: InstanceRow) -> InstanceRow:
    fresh = await storage.get_instance_by_iid(row.iid)
    assert fresh is not None
    return fresh


def token(row: InstanceRow) -> str:
    assert row.owner is not None
    return row.owner


def done(name: str, count: int = 1, result: object = 1, *, at: float = T0) -> StepRecord:
    return StepRecord(
        name, count, "do", "completed", at, result=json.dumps(result), attempts=1,
        finished_at=at,
    )


def ids(rows: list[InstanceRow]) -> list[str]:
    return [r.id for r in rows]


def names(journal: list[StepRecord]) -> list[tuple[str, int]]:
    return [(r.name, r.count) for r in journal]


# -- create_instances ------------------------------------------------------------------------
async def test_create_inserts_queued_rows(storage: Storage) -> None:
    rows = await create(storage, "a", "b")
    assert ids(rows) == ["a", "b"]
    assert len({r.iid for r in rows}) == 2
    for row in rows:
        assert row.workflow == WF
        assert row.status == "queued"
        assert row.params == params(row.id)
        assert row.created_at == row.updated_at == T0
        assert (row.owner, row.lease_until, row.output, row.wake_at) == (None, None, None, None)
        assert row.wait_types == ()
        assert row.runs == 0
        assert await storage.get_instance(WF, row.id) == row
        assert await storage.get_instance_by_iid(row.iid) == row


async def test_create_keeps_null_params(storage: Storage) -> None:
    (row,) = await storage.create_instances(WF, [("a", None)], T0, skip_existing=False)
    assert row.params is None
    assert (await current(storage, row)).params is None


async def test_create_writes_instance_queued_history(storage: Storage) -> None:
    (row,) = await create(storage, "a", now=T0 + 5)
    history = await storage.read_history(row.iid)
    assert [(h.type, h.at, h.workflow, h.id, h.iid) for h in history] == [
        ("instance.queued", T0 + 5, WF, "a", row.iid)
    ]


async def test_create_existing_id_raises_and_inserts_nothing(storage: Storage) -> None:
    (a,) = await create(storage, "a")
    with pytest.raises(DuplicateInstanceError):
        await storage.create_instances(
            WF, [("b", None), ("a", '"new"'), ("c", None)], T0 + 1, skip_existing=False
        )
    assert ids(await storage.list_instances()) == ["a"]
    assert await storage.get_instance(WF, "b") is None
    assert await current(storage, a) == a
    assert len(await storage.read_history(a.iid)) == 1


async def test_create_repeated_id_in_batch_raises_and_inserts_nothing(storage: Storage) -> None:
    with pytest.raises(DuplicateInstanceError):
        await create(storage, "x", "y", "x")
    assert await storage.list_instances() == []


async def test_create_skip_existing_is_idempotent(storage: Storage) -> None:
    (a,) = await create(storage, "a")
    batch = [("a", '"changed"'), ("b", params("b")), ("b", '"again"'), ("c", params("c"))]
    created = await storage.create_instances(WF, batch, T0 + 1, skip_existing=True)
    assert ids(created) == ["b", "c"]
    assert [r.params for r in created] == [params("b"), params("c")]
    assert await current(storage, a) == a  # untouched
    again = await storage.create_instances(WF, batch, T0 + 2, skip_existing=True)
    assert again == []
    assert sorted(ids(await storage.list_instances())) == ["a", "b", "c"]
    b = await storage.get_instance(WF, "b")
    assert b is not None and b.created_at == T0 + 1
    assert [h.type for h in await storage.read_history(b.iid)] == ["instance.queued"]


async def test_create_a_large_batch_with_and_without_taken_ids(storage: Storage) -> None:
    # Large batches take a bulk path on some backends; a taken id sends it back to rows.
    first = [(f"i{n:04d}", params(f"i{n:04d}")) for n in range(600)]
    created = await storage.create_instances(WF, first, T0, skip_existing=False)
    assert ids(created) == [id for id, _ in first]
    assert len({r.iid for r in created}) == 600
    for row in (created[0], created[499], created[500], created[-1]):
        assert await storage.get_instance(WF, row.id) == row
        assert [h.type for h in await storage.read_history(row.iid)] == ["instance.queued"]
    second = [(f"j{n:04d}", None) for n in range(10)]
    taken = [*second[:5], ("i0003", '"again"'), *second[5:]]
    with pytest.raises(DuplicateInstanceError, match="i0003"):
        await storage.create_instances(WF, taken, T0 + 1, skip_existing=False)
    assert await storage.get_instance(WF, "j0000") is None
    skipped = await storage.create_instances(WF, taken, T0 + 2, skip_existing=True)
    assert ids(skipped) == [id for id, _ in second]
    assert await current(storage, created[3]) == created[3]
    for row in skipped:
        assert await storage.get_instance(WF, row.id) == row
    assert len(await storage.list_instances(workflow=WF, limit=1000)) == 610


async def test_same_id_in_two_workflows(storage: Storage) -> None:
    (a,) = await create(storage, "a")
    (other,) = await create(storage, "a", workflow=OTHER)
    assert a.iid != other.iid
    assert await storage.get_instance(WF, "a") == a
    assert await storage.get_instance(OTHER, "a") == other


# -- get_instance / get_instance_by_iid / list_instances ------------------------------------
async def test_get_unknown_instances(storage: Storage) -> None:
    (a,) = await create(storage, "a")
    assert await storage.get_instance(WF, "nope") is None
    assert await storage.get_instance(OTHER, "a") is None
    assert await storage.get_instance_by_iid(a.iid + 1000) is None


async def test_get_instances_by_ids_in_one_workflow(storage: Storage) -> None:
    await create(storage, "a", "b", "c")
    await create(storage, "a", workflow=OTHER)
    many = [f"m{n}" for n in range(1200)]  # more ids than one SQL statement may bind
    await create(storage, *many)
    found = await storage.get_instances(WF, ["c", "a", "missing", *many])
    assert sorted(ids(found)) == sorted(["a", "c", *many])
    assert {r.workflow for r in found} == {WF}
    assert await storage.get_instances(WF, []) == []


async def test_list_instances_filters_newest_first(storage: Storage) -> None:
    await create(storage, "a", now=T0)
    await create(storage, "b", now=T0 + 1)
    await create(storage, "c", now=T0 + 2)
    await create(storage, "a", workflow=OTHER, now=T0 + 3)

    def keys(rows: list[InstanceRow]) -> list[str]:
        return [f"{r.workflow}/{r.id}" for r in rows]

    assert keys(await storage.list_instances()) == ["other/a", "wf/c", "wf/b", "wf/a"]
    assert keys(await storage.list_instances(workflow=WF)) == ["wf/c", "wf/b", "wf/a"]
    assert keys(await storage.list_instances(id="a")) == ["other/a", "wf/a"]
    assert keys(await storage.list_instances(workflow=WF, id="a")) == ["wf/a"]
    assert keys(await storage.list_instances(limit=2)) == ["other/a", "wf/c"]
    await claim(storage, limits={OTHER: 10})
    assert keys(await storage.list_instances(status="running")) == ["other/a"]
    assert keys(await storage.list_instances(status="queued", id="a")) == ["wf/a"]
    assert await storage.list_instances(status="complete") == []


# -- claim -----------------------------------------------------------------------------------
async def test_claim_takes_queued_instances(storage: Storage) -> None:
    created = await create(storage, "a", "b")
    claimed = await claim(storage, "w1", now=T0 + 1, lease_now=L0, lease_for=30)
    assert sorted(ids(claimed)) == ["a", "b"]
    for row in claimed:
        assert row.status == "running"
        assert row.owner == "w1#1"
        assert row.runs == 1
        assert row.lease_until == L0 + 30
        assert await current(storage, row) == row
    assert {r.iid for r in claimed} == {r.iid for r in created}
    assert await claim(storage, "w1", now=T0 + 2) == []
    assert await claim(storage, "w2", now=T0 + 2) == []


async def test_claim_only_given_workflows(storage: Storage) -> None:
    await create(storage, "a")
    (other,) = await create(storage, "b", workflow=OTHER)
    assert ids(await claim(storage, limits={WF: 10})) == ["a"]
    assert (await current(storage, other)).status == "queued"
    assert await claim(storage, limits={}) == []


async def test_claim_takes_due_waiting_instances_not_future_ones(storage: Storage) -> None:
    a, b = await create(storage, "a", "b")
    run_a, run_b = sorted(await claim(storage), key=lambda r: r.id)
    assert await storage.suspend(a.iid, token(run_a), T0, T0 + 10, [], []) == "waiting"
    assert await storage.suspend(b.iid, token(run_b), T0, T0 + 100, [], []) == "waiting"
    assert await claim(storage, now=T0 + 5) == []
    (woken,) = await claim(storage, "w2", now=T0 + 10)  # due exactly now
    assert woken.id == "a"
    assert (woken.status, woken.owner, woken.runs) == ("running", "w2#2", 2)
    assert (woken.wake_at, woken.wait_types) == (None, ())
    assert (await current(storage, b)).status == "waiting"
    assert ids(await claim(storage, now=T0 + 100)) == ["b"]


async def test_claim_skips_instances_that_cannot_run(storage: Storage) -> None:
    rows = await create(storage, "events", "done", "failed", "paused", "killed")
    runs = {r.id: r for r in await claim(storage)}
    # waits for an event with no timeout: only an event wakes it
    await storage.suspend(rows[0].iid, token(runs["events"]), T0, None, ["go"], [])
    await storage.finish(rows[1].iid, token(runs["done"]), T0, "complete", "1", None, [])
    await storage.finish(
        rows[2].iid, token(runs["failed"]), T0, "errored", None, ("ValueError", "no"), []
    )
    await storage.transition(rows[3].iid, lambda row: transitions.pause(row, T0))
    await storage.suspend(rows[3].iid, token(runs["paused"]), T0, T0 + 10, [], [])
    await storage.transition(rows[4].iid, lambda row: transitions.terminate(row, T0))
    statuses = [(await current(storage, r)).status for r in rows]
    assert statuses == ["waiting", "complete", "errored", "paused", "terminated"]
    assert await claim(storage, "w2", now=T0 + 10**9, lease_now=L0 + 10**9) == []


async def test_claim_respects_per_workflow_limits_across_workers(storage: Storage) -> None:
    await create(storage, "a1", "a2", "a3", "a4", "a5")
    await create(storage, "b1", "b2", workflow=OTHER)
    limits = {WF: 2, OTHER: 1}
    first = await claim(storage, "w1", limits=limits)
    assert Counter(r.workflow for r in first) == {WF: 2, OTHER: 1}
    assert await claim(storage, "w1", limits=limits) == []
    assert await claim(storage, "w2", limits=limits) == []  # limits are global, not per worker
    running = [r for r in first if r.workflow == WF]
    await storage.finish(running[0].iid, token(running[0]), T0, "complete", "1", None, [])
    (second,) = await claim(storage, "w2", limits=limits)
    assert second.workflow == WF
    # a waiting instance holds no slot
    await storage.suspend(running[1].iid, token(running[1]), T0, T0 + 60, [], [])
    (third,) = await claim(storage, "w2", limits=limits)
    assert third.workflow == WF
    assert await claim(storage, "w2", limits=limits) == []
    assert len(await storage.list_instances(workflow=WF, status="running")) == 2
    assert len(await storage.list_instances(workflow=OTHER, status="running")) == 1


async def test_claim_takes_woken_instances_before_new_ones(storage: Storage) -> None:
    (x,) = await create(storage, "x", now=T0)
    (run,) = await claim(storage, limits={WF: 1}, now=T0)
    await create(storage, "n1", "n2", now=T0 + 1)  # runnable before x wakes
    await storage.suspend(x.iid, token(run), T0 + 2, T0 + 5, [], [])
    (again,) = await claim(storage, limits={WF: 1}, now=T0 + 10)
    assert (again.id, again.runs) == ("x", 2)
    await storage.release("w1", [x.iid], T0 + 11)  # released: queued, has run before
    (third,) = await claim(storage, limits={WF: 1}, now=T0 + 12)
    assert (third.id, third.runs) == ("x", 3)
    await storage.finish(x.iid, token(third), T0 + 13, "complete", "1", None, [])
    assert ids(await claim(storage, limits={WF: 1}, now=T0 + 14)) == ["n1"]


async def test_claim_takes_event_woken_instance_before_new_ones(storage: Storage) -> None:
    (x,) = await create(storage, "x", now=T0)
    (run,) = await claim(storage, limits={WF: 1})
    await create(storage, "n1", now=T0 + 1)
    await storage.suspend(x.iid, token(run), T0 + 2, None, ["go"], [])
    await storage.deliver_event(x.iid, "go", None, T0 + 3)
    assert ids(await claim(storage, limits={WF: 1}, now=T0 + 4)) == ["x"]


# -- create_instances(start=...): new instances claimed in the create itself ------------------
async def create_started(
    storage: Storage, *ids: str, limit: int, worker: str = "w1", now: float = T0,
    skip_existing: bool = False, lease_until: float = L0 + 30,
) -> list[InstanceRow]:
    return await storage.create_instances(
        WF, [(i, params(i)) for i in ids], now, skip_existing=skip_existing,
        start=StartNow(worker, lease_until, limit),
    )


@pytest.mark.parametrize("many", [False, True], ids=["few", "batch"])
async def test_create_started_takes_free_slots_and_queues_the_rest(
    storage: Storage, many: bool,
) -> None:
    names = [f"n{i}" for i in range(12 if many else 3)]
    limit = 8 if many else 2
    rows = await create_started(storage, *names, limit=limit)
    assert ids(rows) == names
    for row in rows[:limit]:
        assert (row.status, row.owner, row.runs, row.lease_until) == (
            "running", "w1#1", 1, L0 + 30)
        assert await current(storage, row) == row
        assert [h.type for h in await storage.read_history(row.iid)] == [
            "instance.queued", "instance.started"]
    for row in rows[limit:]:
        assert (row.status, row.owner, row.runs) == ("queued", None, 0)
        assert await current(storage, row) == row
    # the started ones hold their slots: a claim finds none free
    assert await claim(storage, "w2", limits={WF: limit}) == []
    # a started run is owned like a claimed one
    first = rows[0]
    await storage.finish(first.iid, token(first), T0 + 1, "complete", "1", None, [])
    assert ids(await claim(storage, "w2", limits={WF: limit}, now=T0 + 2)) == [names[limit]]


async def test_create_started_counts_running_instances_of_any_worker(storage: Storage) -> None:
    await create(storage, "a", "b")
    await claim(storage, "other-worker")
    (new,) = await create_started(storage, "c", limit=3)
    assert new.status == "running"
    (queued,) = await create_started(storage, "d", limit=3)
    assert (queued.status, queued.owner) == ("queued", None)


async def test_create_started_leaves_new_instances_behind_waiting_ones(
    storage: Storage,
) -> None:
    # a queued instance, or a due sleeper, is served first: nothing new starts ahead of it
    (old,) = await create(storage, "old")
    (fresh,) = await create_started(storage, "fresh", limit=10, now=T0 + 1)
    assert fresh.status == "queued"
    runs = {r.id: r for r in await claim(storage, now=T0 + 2)}
    await storage.suspend(old.iid, token(runs["old"]), T0 + 2, T0 + 5, [], [])
    await storage.finish(fresh.iid, token(runs["fresh"]), T0 + 2, "complete", "1", None, [])
    (early,) = await create_started(storage, "early", limit=10, now=T0 + 4)
    assert early.status == "running"  # 'old' is not due yet
    (late,) = await create_started(storage, "late", limit=10, now=T0 + 5)
    assert late.status == "queued"  # 'old' is due: it goes first
    assert ids(await claim(storage, limits={WF: 2}, now=T0 + 5)) == ["old"]


async def test_create_started_with_taken_ids(storage: Storage) -> None:
    await create(storage, "a")
    await claim(storage)  # 'a' runs: one slot of three taken
    rows = await create_started(storage, "a", "b", "c", "d", "e", limit=3, skip_existing=True)
    assert ids(rows) == ["b", "c", "d", "e"]
    assert [r.status for r in rows] == ["running", "running", "queued", "queued"]
    with pytest.raises(DuplicateInstanceError):
        await create_started(storage, "x", "a", limit=10)
    assert await storage.get_instance(WF, "x") is None


async def test_claim_reclaims_expired_lease_with_new_owner(storage: Storage) -> None:
    first = await start(storage, "a", "w1", lease_now=L0, lease_for=1)
    assert first.owner == "w1#1"
    assert await claim(storage, "w2", lease_now=L0 + 0.5) == []  # lease still held
    (second,) = await claim(storage, "w2", now=T0 + 3, lease_now=L0 + 2, lease_for=30)
    assert (second.iid, second.status, second.owner, second.runs) == (
        first.iid, "running", "w2#2", 2
    )
    assert second.lease_until == L0 + 32
    stale = token(first)
    with pytest.raises(LeaseLost):
        await storage.save_step(first.iid, stale, done("s"), [])
    with pytest.raises(LeaseLost):
        await storage.suspend(first.iid, stale, T0 + 4, T0 + 60, [], [])
    with pytest.raises(LeaseLost):
        await storage.finish(first.iid, stale, T0 + 4, "complete", "1", None, [])
    assert await current(storage, first) == second
    assert await storage.load_journal(first.iid) == []
    assert await storage.save_step(first.iid, token(second), done("s"), []) == "running"


async def test_reclaimed_instance_counts_against_the_limit(storage: Storage) -> None:
    a, b = await create(storage, "a", "b")
    (first,) = await claim(storage, "w1", lease_now=L0, lease_for=1, limits={WF: 1})
    assert first.iid == a.iid
    (second,) = await claim(storage, "w2", lease_now=L0 + 5, limits={WF: 1})
    assert (second.iid, second.owner) == (a.iid, "w2#2")
    assert (await current(storage, b)).status == "queued"


async def test_reclaim_keeps_a_requested_pause(storage: Storage) -> None:
    first = await start(storage, "a", "w1", lease_for=1)
    await storage.transition(first.iid, lambda row: transitions.pause(row, T0))
    (second,) = await claim(storage, "w2", lease_now=L0 + 5)
    assert (second.status, second.owner) == ("waiting_for_pause", "w2#2")


async def test_concurrent_claims_never_share_an_instance(stores: Stores) -> None:
    handles = [await stores.open() for _ in range(4)]
    created = await handles[0].create_instances(
        WF, [(f"i{n}", None) for n in range(60)], T0, skip_existing=False
    )
    taken: list[tuple[str, InstanceRow]] = []

    async def work(worker: str, storage: Storage) -> None:
        while True:
            rows = await claim(storage, worker, limits={WF: 3})
            assert len(rows) <= 3
            for row in rows:
                taken.append((worker, row))
                await storage.finish(row.iid, token(row), T0, "complete", "1", None, [])
            if not rows and not await storage.list_instances(status="queued"):
                return

    await asyncio.wait_for(
        asyncio.gather(*(work(f"w{n}", h) for n, h in enumerate(handles))), 30
    )
    counts = Counter(row.iid for _, row in taken)
    assert sorted(counts) == sorted(r.iid for r in created)
    assert set(counts.values()) == {1}
    assert all(row.owner == f"{worker}#1" for worker, row in taken)


# -- renew -----------------------------------------------------------------------------------
async def test_renew_extends_leases_and_reports_statuses(storage: Storage) -> None:
    a, b = await create(storage, "a", "b")
    runs = {r.id: r for r in await claim(storage, "w1", lease_now=L0, lease_for=10)}
    (c,) = await create(storage, "c")
    (other,) = await claim(storage, "w10", lease_now=L0, lease_for=10)
    await storage.transition(b.iid, lambda row: transitions.pause(row, T0))
    statuses = await storage.renew(
        "w1", {a.iid: token(runs["a"]), b.iid: token(runs["b"])}, L0 + 100
    )
    assert statuses == {a.iid: "running", b.iid: "waiting_for_pause"}
    assert (await current(storage, a)).lease_until == L0 + 100
    assert (await current(storage, b)).lease_until == L0 + 100
    assert (await current(storage, c)).lease_until == L0 + 10  # another worker's ('w10')
    # the renewed leases hold past the old end; only w10's ended lease is taken over
    assert other.iid == c.iid
    assert ids(await claim(storage, "w2", lease_now=L0 + 50)) == ["c"]


async def test_renew_reports_lost_for_a_stale_token(storage: Storage) -> None:
    first = await start(storage, "a", "w1", lease_for=1)
    (second,) = await claim(storage, "w2", lease_now=L0 + 5, lease_for=10)
    statuses = await storage.renew("w1", {first.iid: token(first)}, L0 + 1000)
    assert statuses == {first.iid: "lost"}
    assert (await current(storage, first)).lease_until == second.lease_until == L0 + 15


async def test_renew_after_terminate_does_not_report_running(storage: Storage) -> None:
    row = await start(storage, "a", "w1")
    await storage.transition(row.iid, lambda r: transitions.terminate(r, T0))
    statuses = await storage.renew("w1", {row.iid: token(row)}, L0 + 100)
    assert statuses[row.iid] not in ("running", "waiting_for_pause")


# -- release ---------------------------------------------------------------------------------
async def test_release_gives_back_all_of_a_workers_instances(storage: Storage) -> None:
    a, b, c = await create(storage, "a", "b", "c")
    runs = {r.id: r for r in await claim(storage, "w1")}
    (d,) = await create(storage, "d")
    (run_d,) = await claim(storage, "w10")
    await storage.transition(b.iid, lambda row: transitions.pause(row, T0 + 1))
    await storage.release("w1", None, T0 + 5)
    for row in (a, c):
        now = await current(storage, row)
        assert (now.status, now.owner, now.lease_until) == ("queued", None, None)
    paused = await current(storage, b)
    assert (paused.status, paused.paused_at, paused.owner) == ("paused", T0 + 5, None)
    assert await current(storage, d) == run_d  # another worker's: untouched
    with pytest.raises(LeaseLost):
        await storage.save_step(a.iid, token(runs["a"]), done("s"), [])
    again = await claim(storage, "w2", now=T0 + 6)
    assert sorted(ids(again)) == ["a", "c"]
    assert {r.runs for r in again} == {2}


async def test_release_only_the_given_instances(storage: Storage) -> None:
    a, b = await create(storage, "a", "b")
    runs = {r.id: r for r in await claim(storage, "w1")}
    await storage.release("w1", [], T0 + 1)
    await storage.release("w2", [a.iid], T0 + 1)  # not w2's
    assert await current(storage, a) == runs["a"]
    await storage.release("w1", [a.iid], T0 + 2)
    assert (await current(storage, a)).status == "queued"
    assert await current(storage, b) == runs["b"]
    assert await storage.save_step(b.iid, token(runs["b"]), done("s"), []) == "running"


# -- save_step / load_journal ----------------------------------------------------------------
async def test_save_step_upserts_by_name_and_count_in_journal_order(storage: Storage) -> None:
    row = await start(storage)
    owner = token(row)
    retrying = StepRecord(
        "a", 1, "do", "retrying", T0, error_name="ValueError", error_message="boom",
        error_detail="Traceback: ...", attempts=1, wake_at=T0 + 10,
    )
    sleeping = StepRecord("nap", 1, "sleep", "sleeping", T0, wake_at=T0 + 60)
    waiting = StepRecord("w", 1, "wait", "waiting", T0, wake_at=T0 + 99, event_type="go")
    second_a = done("a", 2, {"x": [1, 2]})
    for record in (retrying, sleeping, waiting, second_a):
        assert await storage.save_step(row.iid, owner, record, []) == "running"
    journal = await storage.load_journal(row.iid)
    assert names(journal) == [("a", 1), ("nap", 1), ("w", 1), ("a", 2)]
    seqs = [r.seq for r in journal]
    assert seqs == sorted(seqs) and len(set(seqs)) == 4
    assert [r._replace(seq=0) for r in journal] == [
        retrying, sleeping, waiting, second_a
    ]

    completed = done("a", 1, 42, at=T0)._replace(attempts=2, finished_at=T0 + 11)
    await storage.save_step(row.iid, owner, completed, [HistoryItem("step.completed", T0 + 11)])
    journal2 = await storage.load_journal(row.iid)
    assert [r.seq for r in journal2] == seqs  # same entry, same place
    assert journal2[0]._replace(seq=0) == completed
    assert journal2[1:] == journal[1:]
    assert (await storage.read_history(row.iid))[-1].type == "step.completed"


async def test_history_keeps_empty_columns_empty(storage: Storage) -> None:
    """Entries with any mix of empty fields read back exactly (the SQLite backend spells
    empty columns specially on the way in; none of that may show on the way out)."""
    row = await start(storage)
    owner = token(row)
    items = [
        HistoryItem("instance.log", T0 + 1, data={"text": "hi"}),
        HistoryItem("step.completed", T0 + 2, "a", None, 1, 1, T0 + 1),
        HistoryItem("attempt.failed", T0 + 3, "b", {"error": "x"}, 2, 3),
        HistoryItem("instance.paused", T0 + 4),
    ]
    await storage.save_step(row.iid, owner, done("a"), items[:2])
    await storage.append_history(row.iid, owner, items[2:])
    history = (await storage.read_history(row.iid))[-4:]
    assert [(h.type, h.at, h.step, h.count, h.attempt, h.since) for h in history] == [
        ("instance.log", T0 + 1, None, None, None, None),
        ("step.completed", T0 + 2, "a", 1, 1, T0 + 1),
        ("attempt.failed", T0 + 3, "b", 2, 3, None),
        ("instance.paused", T0 + 4, None, None, None, None),
    ]
    assert [None if h.data is None else json.loads(h.data) for h in history] == [
        {"text": "hi"}, None, {"error": "x"}, None,
    ]


def feed(rows: list[HistoryRow]) -> list[tuple[object, ...]]:
    return [(h.type, h.at, h.step, h.count, h.attempt, h.since) for h in rows]


async def test_feed_keeps_the_order_entries_were_written_in(storage: Storage) -> None:
    row = await start(storage)
    owner = token(row)
    first = done("a", at=T0 + 1)._replace(started_at=T0 + 0.5)
    second = done("b", at=T0 + 3)._replace(started_at=T0 + 2.5)
    log = HistoryItem("instance.log", T0 + 0.7, data={"text": "hi"})
    await storage.save_step(row.iid, owner, first, [log], entry=True)
    await storage.append_history(row.iid, owner, [HistoryItem("instance.log", T0 + 2)])
    await storage.save_step(row.iid, owner, second, [], entry=True)
    await storage.finish(row.iid, owner, T0 + 4, "complete", "1", None,
                         [HistoryItem("instance.completed", T0 + 4)])
    everything = await storage.read_history(row.iid)
    assert feed(everything) == [
        ("instance.queued", T0, None, None, None, None),
        ("instance.started", T0, None, None, None, None),
        ("instance.log", T0 + 0.7, None, None, None, None),
        ("step.completed", T0 + 1, "a", 1, 1, T0 + 0.5),
        ("instance.log", T0 + 2, None, None, None, None),
        ("step.completed", T0 + 3, "b", 1, 1, T0 + 2.5),
        ("instance.completed", T0 + 4, None, None, None, None),
    ]
    seqs = [h.seq for h in everything]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert all((h.iid, h.workflow, h.id) == (row.iid, WF, "a") for h in everything)
    # read a page at a time, each after the last place seen
    paged: list[HistoryRow] = []
    while page := await storage.read_history(row.iid, paged[-1].seq if paged else 0, 2):
        assert len(page) <= 2
        paged += page
    assert paged == everything


async def test_a_finished_steps_entry_follows_its_journal_write(storage: Storage) -> None:
    row = await start(storage)
    owner = token(row)
    nap = StepRecord("nap", 1, "sleep", "completed", T0, wake_at=T0, finished_at=T0)
    a = done("a", at=T0 + 1)
    with pytest.raises(LeaseLost):  # not the owner: neither the step nor its entry
        await storage.save_step(row.iid, "w9#1", a, [], entry=True)
    await storage.save_step(row.iid, owner, a, [], earlier=[nap], entry=True)
    b = done("b", at=T0 + 2)._replace(error_name="x")  # another shape of record
    await storage.save_step(row.iid, owner, b, [HistoryItem("instance.log", T0 + 2)],
                            entry=True)
    assert names(await storage.load_journal(row.iid)) == [("nap", 1), ("a", 1), ("b", 1)]
    assert feed(await storage.read_history(row.iid))[2:] == [
        ("step.completed", T0 + 1, "a", 1, 1, T0 + 1),
        ("instance.log", T0 + 2, None, None, None, None),
        ("step.completed", T0 + 2, "b", 1, 1, T0 + 2),
    ]


async def test_feed_keeps_the_entries_of_steps_a_restart_removes(storage: Storage) -> None:
    row = await start(storage)
    owner = token(row)
    steps = [done(name, at=T0 + n) for n, name in enumerate("abc", 1)]
    for record in steps:
        await storage.save_step(row.iid, owner, record, [], entry=True)
    before = await storage.read_history(row.iid)
    from_seq = (await storage.load_journal(row.iid))[1].seq
    await storage.transition(row.iid, lambda r: transitions.restart(r, T0 + 5, from_seq, "b"))
    assert names(await storage.load_journal(row.iid)) == [("a", 1)]
    (again,) = await claim(storage, now=T0 + 6)
    redo = done("b", at=T0 + 7)
    await storage.save_step(row.iid, token(again), redo, [], entry=True)
    after = await storage.read_history(row.iid)
    assert after[:len(before)] == before  # the same entries, in the same places
    assert [h.type for h in after[len(before):]] == [
        "instance.restarted", "instance.started", "step.completed"]
    assert (after[-1].step, after[-1].at) == ("b", T0 + 7)


async def test_save_step_reports_a_requested_pause(storage: Storage) -> None:
    row = await start(storage)
    await storage.transition(row.iid, lambda r: transitions.pause(r, T0))
    assert await storage.save_step(row.iid, token(row), done("s"), []) == "waiting_for_pause"
    assert names(await storage.load_journal(row.iid)) == [("s", 1)]


async def test_save_step_consumes_an_event_exactly_once(storage: Storage) -> None:
    row = await start(storage)
    owner = token(row)
    first = await storage.deliver_event(row.iid, "go", '"1"', T0)
    second = await storage.deliver_event(row.iid, "go", '"2"', T0)
    wait1 = StepRecord("w", 1, "wait", "completed", T0, result='"1"', event_type="go")
    await storage.save_step(row.iid, owner, wait1, [], consume=first.seq)
    assert await storage.next_inbox_event(row.iid, "go") == second
    wait2 = StepRecord("w", 2, "wait", "completed", T0, result='"1"', event_type="go")
    with pytest.raises(LeaseLost):
        await storage.save_step(row.iid, owner, wait2, [], consume=first.seq)
    assert names(await storage.load_journal(row.iid)) == [("w", 1)]  # nothing half-saved
    await storage.save_step(row.iid, owner, wait2, [], consume=second.seq)
    assert await storage.next_inbox_event(row.iid, "go") is None
    assert names(await storage.load_journal(row.iid)) == [("w", 1), ("w", 2)]


async def test_an_event_for_a_finished_instance_writes_nothing(storage: Storage) -> None:
    row = await start(storage)
    await storage.transition(row.iid, lambda r: transitions.terminate(r, T0))
    before = await storage.read_history(row.iid)
    assert await storage.deliver_event(row.iid, "go", '"1"', T0 + 1) is None
    assert await storage.next_inbox_event(row.iid, "go") is None
    assert await storage.read_history(row.iid) == before
    assert await storage.deliver_event(10**9, "go", None, T0 + 1) is None  # no such instance


async def test_save_step_refused_without_the_lease(storage: Storage) -> None:
    row = await start(storage)
    with pytest.raises(LeaseLost):
        await storage.save_step(row.iid, "w1#7", done("s"), [])
    with pytest.raises(LeaseLost):
        await storage.save_step(row.iid, "w2#1", done("s"), [])
    await storage.transition(row.iid, lambda r: transitions.terminate(r, T0))
    with pytest.raises(LeaseLost) as lost:
        await storage.save_step(row.iid, token(row), done("s"), [])
    assert lost.value.status == "terminated"
    assert await storage.load_journal(row.iid) == []


# -- suspend ---------------------------------------------------------------------------------
async def test_suspend_waits_for_a_timer_and_events(storage: Storage) -> None:
    row = await start(storage)
    status = await storage.suspend(
        row.iid, token(row), T0 + 1, T0 + 60, ["approve", "cancel"],
        [HistoryItem("wait.started", T0 + 1, "w")],
    )
    assert status == "waiting"
    now = await current(storage, row)
    assert (now.status, now.wake_at, now.owner, now.lease_until) == (
        "waiting", T0 + 60, None, None
    )
    assert sorted(now.wait_types) == ["approve", "cancel"]
    assert "wait.started" in [h.type for h in await storage.read_history(row.iid)]
    assert await storage.next_wake([WF]) == T0 + 60
    with pytest.raises(LeaseLost):
        await storage.save_step(row.iid, token(row), done("s"), [])


async def test_suspend_queues_when_a_matching_event_is_buffered(storage: Storage) -> None:
    row = await start(storage)
    await storage.deliver_event(row.iid, "approve", None, T0)
    assert (await current(storage, row)).status == "running"
    assert await storage.suspend(row.iid, token(row), T0 + 1, T0 + 60, ["approve"], []) == (
        "queued"
    )
    now = await current(storage, row)
    assert (now.status, now.owner) == ("queued", None)
    assert ids(await claim(storage, now=T0 + 2)) == ["a"]


async def test_suspend_ignores_other_and_consumed_events(storage: Storage) -> None:
    row = await start(storage)
    consumed = await storage.deliver_event(row.iid, "approve", None, T0)
    await storage.save_step(
        row.iid, token(row), StepRecord("w", 1, "wait", "completed", T0, event_type="approve"),
        [], consume=consumed.seq,
    )
    await storage.deliver_event(row.iid, "other", None, T0)
    assert await storage.suspend(row.iid, token(row), T0 + 1, T0 + 60, ["approve"], []) == (
        "waiting"
    )


async def test_suspend_queues_when_the_wake_time_passed(storage: Storage) -> None:
    row = await start(storage)
    assert await storage.suspend(row.iid, token(row), T0 + 10, T0 + 10, [], []) == "queued"
    assert (await current(storage, row)).status == "queued"
    assert ids(await claim(storage, now=T0 + 10)) == ["a"]


async def test_suspend_pauses_when_a_pause_was_requested(storage: Storage) -> None:
    row = await start(storage)
    await storage.transition(row.iid, lambda r: transitions.pause(r, T0))
    assert (await current(storage, row)).status == "waiting_for_pause"
    assert await storage.suspend(row.iid, token(row), T0 + 3, T0 + 60, ["go"], []) == "paused"
    now = await current(storage, row)
    assert (now.status, now.paused_at, now.owner) == ("paused", T0 + 3, None)
    await storage.deliver_event(row.iid, "go", None, T0 + 4)
    assert (await current(storage, row)).status == "paused"
    assert await claim(storage, now=T0 + 10**6, lease_now=L0 + 10**6) == []


async def test_suspend_refused_without_the_lease(storage: Storage) -> None:
    row = await start(storage)
    with pytest.raises(LeaseLost):
        await storage.suspend(row.iid, "w1#2", T0, T0 + 60, [], [])
    assert await current(storage, row) == row


# -- finish ----------------------------------------------------------------------------------
async def test_finish_complete(storage: Storage) -> None:
    row = await start(storage)
    await storage.finish(
        row.iid, token(row), T0 + 7, "complete", '{"ok":true}', None,
        [HistoryItem("instance.completed", T0 + 7)],
    )
    now = await current(storage, row)
    assert (now.status, now.output, now.error_name, now.owner, now.lease_until) == (
        "complete", '{"ok":true}', None, None, None
    )
    assert now.updated_at == T0 + 7
    assert (await storage.read_history(row.iid))[-1].type == "instance.completed"
    assert await claim(storage, now=T0 + 10**6, lease_now=L0 + 10**6) == []
    with pytest.raises(LeaseLost):
        await storage.save_step(row.iid, token(row), done("s"), [])
    with pytest.raises(LeaseLost):
        await storage.finish(row.iid, token(row), T0 + 8, "errored", None, ("E", "m"), [])
    assert (await current(storage, row)).status == "complete"


async def test_finish_errored(storage: Storage) -> None:
    row = await start(storage)
    await storage.finish(row.iid, token(row), T0 + 7, "errored", None, ("ValueError", "bad"), [])
    now = await current(storage, row)
    assert (now.status, now.output, now.error_name, now.error_message, now.owner) == (
        "errored", None, "ValueError", "bad", None
    )


async def test_finish_refused_without_the_lease(storage: Storage) -> None:
    row = await start(storage)
    with pytest.raises(LeaseLost):
        await storage.finish(row.iid, "w9#1", T0, "complete", "1", None, [])
    assert await current(storage, row) == row


# -- deliver_event / next_inbox_event --------------------------------------------------------
async def test_events_are_fifo_per_type(storage: Storage) -> None:
    a, b = await create(storage, "a", "b")
    go1 = await storage.deliver_event(a.iid, "go", '{"n":1}', T0 + 1)
    stop = await storage.deliver_event(a.iid, "stop", None, T0 + 2)
    go2 = await storage.deliver_event(a.iid, "go", '{"n":2}', T0 + 3)
    assert go1 == InboxEvent(go1.seq, "go", '{"n":1}', T0 + 1)
    assert (stop.type, stop.payload, stop.at) == ("stop", None, T0 + 2)
    assert go1.seq < stop.seq < go2.seq
    assert await storage.next_inbox_event(a.iid, "go") == go1
    assert await storage.next_inbox_event(a.iid, "go") == go1  # reading does not consume
    assert await storage.next_inbox_event(a.iid, "stop") == stop
    assert await storage.next_inbox_event(a.iid, "other") is None
    assert await storage.next_inbox_event(b.iid, "go") is None  # per instance
    run = {r.id: r for r in await claim(storage)}["a"]
    await storage.save_step(
        a.iid, token(run), StepRecord("w", 1, "wait", "completed", T0, event_type="go"), [],
        consume=go1.seq,
    )
    assert await storage.next_inbox_event(a.iid, "go") == go2
    assert await storage.next_inbox_event(a.iid, "stop") == stop
    assert (await current(storage, a)).status == "running"  # an event does not disturb a run


async def test_deliver_wakes_a_waiting_instance_only_for_its_types(storage: Storage) -> None:
    a, b = await create(storage, "a", "b")
    runs = {r.id: r for r in await claim(storage)}
    await storage.suspend(a.iid, token(runs["a"]), T0, T0 + 3600, ["approve"], [])
    await storage.suspend(b.iid, token(runs["b"]), T0, T0 + 3600, [], [])  # a plain sleep
    await storage.deliver_event(a.iid, "other", None, T0 + 1)
    await storage.deliver_event(b.iid, "approve", None, T0 + 1)
    assert (await current(storage, a)).status == "waiting"
    assert (await current(storage, b)).status == "waiting"
    assert await claim(storage, now=T0 + 2) == []
    await storage.deliver_event(a.iid, "approve", '"yes"', T0 + 3)
    assert (await current(storage, a)).status == "queued"
    assert (await current(storage, b)).status == "waiting"
    (woken,) = await claim(storage, now=T0 + 4)
    assert (woken.id, woken.runs, woken.wake_at) == ("a", 2, None)
    event = await storage.next_inbox_event(a.iid, "approve")
    assert event is not None and event.payload == '"yes"'


async def test_deliver_leaves_queued_and_paused_instances_alone(storage: Storage) -> None:
    a, b = await create(storage, "a", "b")
    await storage.transition(b.iid, lambda r: transitions.pause(r, T0))
    await storage.deliver_event(a.iid, "go", None, T0 + 1)
    await storage.deliver_event(b.iid, "go", None, T0 + 1)
    assert (await current(storage, a)).status == "queued"
    assert (await current(storage, b)).status == "paused"
    assert await storage.next_inbox_event(b.iid, "go") is not None  # buffered for later


# -- transition ------------------------------------------------------------------------------
async def test_transition_applies_fields_and_history(storage: Storage) -> None:
    (row,) = await create(storage, "a")
    seen: list[InstanceRow] = []

    def decide(current_row: InstanceRow) -> Change:
        seen.append(current_row)
        return Change(
            {"status": "paused", "paused_at": T0 + 1, "updated_at": T0 + 1},
            (HistoryItem("instance.paused", T0 + 1, data={"why": "test"}),),
        )

    new = await storage.transition(row.iid, decide)
    assert seen == [row]
    assert new == await current(storage, row)
    assert (new.status, new.paused_at, new.updated_at) == ("paused", T0 + 1, T0 + 1)
    assert dataclasses.replace(new, status="queued", paused_at=None, updated_at=T0) == row
    last = (await storage.read_history(row.iid))[-1]
    assert (last.type, last.at, json.loads(last.data or "null")) == (
        "instance.paused", T0 + 1, {"why": "test"}
    )


async def test_transition_with_no_change(storage: Storage) -> None:
    (row,) = await create(storage, "a")
    assert await storage.transition(row.iid, lambda r: Change({})) == row
    assert len(await storage.read_history(row.iid)) == 1


async def test_transition_aborts_when_decide_raises(storage: Storage) -> None:
    row = await start(storage)
    await storage.finish(row.iid, token(row), T0, "complete", "1", None, [])
    before = await current(storage, row)
    history = await storage.read_history(row.iid)
    with pytest.raises(InvalidStateError):
        await storage.transition(row.iid, lambda r: transitions.terminate(r, T0 + 1))
    assert await current(storage, row) == before
    assert await storage.read_history(row.iid) == history


async def test_transition_resets_the_journal_and_releases_events(storage: Storage) -> None:
    row = await start(storage)
    owner = token(row)
    e1 = await storage.deliver_event(row.iid, "go", '"1"', T0)
    e2 = await storage.deliver_event(row.iid, "go", '"2"', T0)
    await storage.save_step(
        row.iid, owner, StepRecord("w", 1, "wait", "completed", T0, event_type="go"), [],
        consume=e1.seq,
    )
    await storage.save_step(row.iid, owner, done("s"), [])
    await storage.save_step(
        row.iid, owner, StepRecord("w", 2, "wait", "completed", T0, event_type="go"), [],
        consume=e2.seq,
    )
    await storage.save_step(row.iid, owner, done("t"), [])
    journal = await storage.load_journal(row.iid)
    assert names(journal) == [("w", 1), ("s", 1), ("w", 2), ("t", 1)]
    assert await storage.next_inbox_event(row.iid, "go") is None

    from_seq = journal[2].seq
    new = await storage.transition(
        row.iid, lambda r: transitions.restart(r, T0 + 5, from_seq, "w")
    )
    assert (new.status, new.owner) == ("queued", None)
    assert await storage.load_journal(row.iid) == journal[:2]
    assert await storage.next_inbox_event(row.iid, "go") == e2  # e1 stays consumed
    # the released event can be consumed again, by the new run
    (run,) = await claim(storage, now=T0 + 6)
    await storage.save_step(
        row.iid, token(run), StepRecord("w", 2, "wait", "completed", T0, event_type="go"), [],
        consume=e2.seq,
    )

    await storage.transition(row.iid, lambda r: Change({}, reset_journal_from=0))
    assert await storage.load_journal(row.iid) == []
    assert await storage.next_inbox_event(row.iid, "go") == e1


async def test_transition_shifts_pending_timers(storage: Storage) -> None:
    row = await start(storage)
    owner = token(row)
    records = [
        StepRecord("old nap", 1, "sleep", "completed", T0, wake_at=T0 + 5, finished_at=T0 + 5),
        done("done"),
        StepRecord("nap", 1, "sleep", "sleeping", T0, wake_at=T0 + 100),
        StepRecord("w", 1, "wait", "waiting", T0, wake_at=T0 + 200, event_type="go"),
        StepRecord("r", 1, "do", "retrying", T0, attempts=1, wake_at=T0 + 50),
    ]
    for record in records:
        await storage.save_step(row.iid, owner, record, [])
    await storage.transition(row.iid, lambda r: Change({}, shift_timers=30.0))
    wake = {r.name: r.wake_at for r in await storage.load_journal(row.iid)}
    assert wake == {
        "old nap": T0 + 5, "done": None, "nap": T0 + 130, "w": T0 + 230, "r": T0 + 80,
    }


async def test_pause_and_resume_shift_the_timers_by_the_pause(storage: Storage) -> None:
    row = await start(storage)
    await storage.save_step(
        row.iid, token(row), StepRecord("nap", 1, "sleep", "sleeping", T0, wake_at=T0 + 100), []
    )
    await storage.suspend(row.iid, token(row), T0, T0 + 100, [], [])
    paused = await storage.transition(row.iid, lambda r: transitions.pause(r, T0 + 10))
    assert (paused.status, paused.paused_at) == ("paused", T0 + 10)
    resumed = await storage.transition(row.iid, lambda r: transitions.resume(r, T0 + 70))
    assert resumed.status == "queued"
    (nap,) = await storage.load_journal(row.iid)
    assert nap.wake_at == T0 + 160


# -- history / next_wake ---------------------------------------------------------------------
async def test_read_history_pages_with_after(storage: Storage) -> None:
    a, b = await create(storage, "a", "b")
    claimed = {row.iid: row for row in await claim(storage)}
    items = [HistoryItem(f"h{n}", T0 + n, f"step {n}", {"n": n}) for n in range(8)]
    await storage.append_history(a.iid, token(claimed[a.iid]), items)
    await storage.append_history(b.iid, token(claimed[b.iid]), [HistoryItem("elsewhere", T0)])
    everything = await storage.read_history(a.iid)
    assert [h.type for h in everything] == (
        ["instance.queued", "instance.started"] + [f"h{n}" for n in range(8)]
    )
    assert all((h.iid, h.workflow, h.id) == (a.iid, WF, "a") for h in everything)
    seqs = [h.seq for h in everything]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert [(h.step, h.at, json.loads(h.data or "null")) for h in everything[2:]] == [
        (f"step {n}", T0 + n, {"n": n}) for n in range(8)
    ]
    assert everything[0].step is None

    pages: list[list[str]] = []
    after = 0
    for _ in range(10):  # bounded: a backend that ignores ``after`` must fail, not hang
        page = await storage.read_history(a.iid, after=after, limit=4)
        if not page:
            break
        pages.append([h.type for h in page])
        after = page[-1].seq
    assert pages == [
        ["instance.queued", "instance.started", "h0", "h1"], ["h2", "h3", "h4", "h5"],
        ["h6", "h7"],
    ]
    assert await storage.read_history(a.iid, after=seqs[-1]) == []


async def test_append_history_refuses_a_stale_owner(storage: Storage) -> None:
    row = await start(storage, "a")
    stale = token(row)
    await storage.release("w1", None, T0)
    await claim(storage, "w2")
    before = await storage.read_history(row.iid)
    with pytest.raises(LeaseLost):
        await storage.append_history(row.iid, stale, [HistoryItem("late", T0)])
    assert await storage.read_history(row.iid) == before


async def test_next_wake(storage: Storage) -> None:
    assert await storage.next_wake([WF]) is None
    await create(storage, "a", "b", "c")
    await create(storage, "o", workflow=OTHER)
    runs = {r.id: r for r in await claim(storage, limits={WF: 10, OTHER: 10})}
    await storage.suspend(runs["a"].iid, token(runs["a"]), T0, T0 + 50, [], [])
    await storage.suspend(runs["b"].iid, token(runs["b"]), T0, T0 + 20, ["go"], [])
    await storage.suspend(runs["o"].iid, token(runs["o"]), T0, T0 + 5, [], [])
    assert await storage.next_wake([WF]) == T0 + 20
    assert await storage.next_wake([WF, OTHER]) == T0 + 5
    assert await storage.next_wake([]) is None
    await storage.deliver_event(runs["b"].iid, "go", None, T0 + 1)  # b no longer waits
    assert await storage.next_wake([WF]) == T0 + 50


# -- schema and reopening --------------------------------------------------------------------
async def test_schema_version_is_stored_in_meta(storage: Storage, backend: Backend) -> None:
    version = backend.read_meta("schema_version")
    assert version is not None and int(version) >= 1


async def test_a_newer_schema_version_is_refused(stores: Stores, backend: Backend) -> None:
    first = await stores.open()
    await stores.close(first)
    version = int(backend.read_meta("schema_version") or 0)
    backend.write_meta("schema_version", str(version + 1))
    newer = backend.new()
    try:
        with pytest.raises(StorageError, match=str(version + 1)):
            await newer.open()
    finally:
        await newer.close()
    assert backend.read_meta("schema_version") == str(version + 1)  # left as it was


async def test_reopening_keeps_everything(stores: Stores, backend: Backend) -> None:
    storage = await stores.open()
    a, b, c = await create(storage, "a", "b", "c")
    runs = {r.id: r for r in await claim(storage)}
    await storage.save_step(a.iid, token(runs["a"]), done("s", result={"v": 1}), [])
    await storage.finish(a.iid, token(runs["a"]), T0 + 1, "complete", '"out"', None, [])
    event = await storage.deliver_event(b.iid, "go", '"p"', T0 + 1)
    await storage.save_step(
        b.iid, token(runs["b"]), StepRecord("nap", 1, "sleep", "sleeping", T0, wake_at=T0 + 99),
        [HistoryItem("sleep.started", T0, "nap")],
    )
    await storage.suspend(b.iid, token(runs["b"]), T0 + 1, T0 + 99, ["other"], [])
    version = backend.read_meta("schema_version")

    async def snapshot(s: Storage) -> object:
        rows = await s.list_instances()
        return (
            rows,
            [await s.load_journal(r.iid) for r in rows],
            [await s.read_history(r.iid) for r in rows],
            await s.next_inbox_event(b.iid, "go"),
            await s.next_wake([WF]),
        )

    before = await snapshot(storage)
    await stores.close(storage)
    reopened = await stores.open()
    assert await snapshot(reopened) == before
    assert backend.read_meta("schema_version") == version
    assert await reopened.next_inbox_event(b.iid, "go") == event
    # the running instance is still owned by its run, which can go on writing
    assert await reopened.save_step(c.iid, token(runs["c"]), done("t"), []) == "running"
    (d,) = await create(reopened, "d")
    assert d.iid not in (a.iid, b.iid, c.iid)


# -- approvals --------------------------------------------------------------------------------
GATE_TYPE = "approval:0123456789abcdef:1"


async def open_gate(storage: Storage, id: str = "a", *, version: str | None = "v1",
                    at: float = T0 + 1, tenant: str | None = None) -> InstanceRow:
    """Run an instance to an approval gate ('approve', occurrence 1) and hibernate it."""
    if tenant is None:
        row = await start(storage, id)
    else:
        (row,) = await storage.create_instances(WF, [(id, None)], T0, skip_existing=False,
                                                tenant=tenant)
        (row,) = await claim(storage, now=T0)
    request = {"type": GATE_TYPE, "until": T0 + 3600, "prompt": "ship?", "data": {"n": 1},
               "version": version}
    status = await storage.suspend(
        row.iid, token(row), at, T0 + 3600, [GATE_TYPE],
        [HistoryItem("approval.requested", at, "approve", request, 1)],
        records=[StepRecord("approve", 1, "wait", "waiting", at, event_type=GATE_TYPE,
                            wake_at=T0 + 3600)],
    )
    assert status == "waiting"
    return row


def decision(approved: bool = True, version: str | None = "v1") -> str:
    return json.dumps({"approved": approved, "by": "ada", "comment": None, "data": None,
                       "edited": False, "version": version})


async def test_pending_approvals_lists_open_gates(storage: Storage) -> None:
    row = await open_gate(storage)
    (gate,) = await storage.pending_approvals()
    assert (gate.iid, gate.workflow, gate.id, gate.gate, gate.count, gate.at) == (
        row.iid, WF, "a", "approve", 1, T0 + 1)
    assert json.loads(gate.data or "{}")["prompt"] == "ship?"
    assert await storage.pending_approvals(workflow="other") == []
    assert await storage.pending_approvals(requested_before=T0) == []
    assert len(await storage.pending_approvals(requested_before=T0 + 1)) == 1
    assert len(await storage.pending_approvals(iid=row.iid)) == 1


async def test_pending_approvals_filter_by_tenant(storage: Storage) -> None:
    await open_gate(storage, "acme.x", tenant="acme")
    assert [g.tenant for g in await storage.pending_approvals(tenant="acme")] == ["acme"]
    assert await storage.pending_approvals(tenant="globex") == []


async def test_decide_approval_delivers_once_and_wakes(storage: Storage) -> None:
    row = await open_gate(storage)
    assert await storage.decide_approval(row.iid, "approve", 1, decision(), "v1", True,
                                         T0 + 2) == "ok"
    assert (await current(storage, row)).status == "queued"
    event = await storage.next_inbox_event(row.iid, GATE_TYPE)
    assert event is not None and json.loads(event.payload or "{}")["by"] == "ada"
    assert await storage.decide_approval(row.iid, "approve", 1, decision(False), "v1", True,
                                         T0 + 3) == "decided"
    types = [h.type for h in await storage.read_history(row.iid)]
    assert types.count("approval.decided") == 1


async def test_decide_approval_refusals(storage: Storage) -> None:
    row = await open_gate(storage)
    assert await storage.decide_approval(row.iid, "other", 1, decision(), "v1", True,
                                         T0 + 2) == "unknown"
    assert await storage.decide_approval(row.iid, "approve", 1, decision(), "v2", True,
                                         T0 + 2) == "version"
    assert await storage.next_inbox_event(row.iid, GATE_TYPE) is None  # nothing delivered
    assert await storage.decide_approval(row.iid, "approve", 1, decision(), None, False,
                                         T0 + 2) == "ok"


async def test_decide_approval_is_stale_after_an_upgrade(storage: Storage) -> None:
    row = await open_gate(storage)

    def upgrade(current: InstanceRow) -> Change:
        return Change({"updated_at": T0 + 1.5}, (HistoryItem("instance.upgraded", T0 + 1.5),))

    await storage.transition(row.iid, upgrade)
    assert await storage.decide_approval(row.iid, "approve", 1, decision(), "v1", True,
                                         T0 + 2) == "stale"


async def test_decide_approval_refused_once_the_instance_finished(storage: Storage) -> None:
    """A decision that races the instance's end (it was read open, the instance was then
    terminated) writes nothing: no inbox row, no history entry after the end."""
    row = await open_gate(storage)
    await storage.transition(row.iid, lambda r: transitions.terminate(r, T0 + 1.5))
    before = await storage.read_history(row.iid)
    assert await storage.decide_approval(row.iid, "approve", 1, decision(), "v1", True,
                                         T0 + 2) == "finished"
    assert await storage.next_inbox_event(row.iid, GATE_TYPE) is None
    assert await storage.read_history(row.iid) == before


# -- fair claims across tenants ----------------------------------------------------------------
async def test_fair_claims_go_round_robin_across_tenants_oldest_first(storage: Storage) -> None:
    await storage.create_instances(WF, [(f"a{n}", None) for n in range(50)], T0,
                                   skip_existing=False, tenant="a")
    await storage.create_instances(WF, [("b0", None), ("b1", None)], T0 + 1,
                                   skip_existing=False, tenant="b")
    await storage.create_instances(WF, [("c0", None)], T0 + 2, skip_existing=False,
                                   tenant="c")
    first = await storage.claim("w1", T0 + 3, L0, L0 + 30, {WF: 4}, {WF: None})
    # one each (oldest tenant first), then the tenant with the fewest running again
    assert ids(first) == ["a0", "b0", "c0", "a1"]
    assert all(r.status == "running" for r in first)


async def test_fair_claims_respect_each_tenants_quota(storage: Storage) -> None:
    await storage.create_instances(WF, [(f"a{n}", None) for n in range(5)], T0,
                                   skip_existing=False, tenant="a")
    await storage.create_instances(WF, [(f"b{n}", None) for n in range(5)], T0 + 1,
                                   skip_existing=False, tenant="b")
    claimed = await storage.claim("w1", T0 + 2, L0, L0 + 30, {WF: 10}, {WF: 2})
    assert ids(claimed) == ["a0", "b0", "a1", "b1"]
    again = await storage.claim("w1", T0 + 3, L0, L0 + 30, {WF: 10}, {WF: 2})
    assert again == []  # both tenants at their quota, slots left idle
