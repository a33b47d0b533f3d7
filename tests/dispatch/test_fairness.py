"""Tenants share a dynamic workflow's slots fairly: a flood from one tenant does not hold
another's instances back, and a per-tenant quota is never exceeded. Real time, real SQLite."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

import agentflow as af
from agentflow.dispatch import Loader, create_dynamic_workflow_entrypoint, wrap_workflow_binding
from agentflow.storage import InstanceRow, SqliteStorage
from tests.conftest import rows
from tests.dispatch._support import WORK_PLAN, ToolLog, settle

FLOOD = 200
T0 = 10_000.0  # engine clock, for the storage-level test
L0 = 50_000.0  # wall clock, for leases
WF = "plans"


def statuses(db_path: Path, tenant: str) -> Counter[str]:
    return Counter({str(status): int(str(n)) for status, n in rows(
        db_path, "SELECT status, count(*) FROM instances WHERE tenant = ? GROUP BY status", tenant
    )})


async def test_a_flood_from_one_tenant_does_not_starve_another(
    engine: af.Engine, db_path: Path
) -> None:
    log = ToolLog()
    loader = Loader(engine, mode="in-process", tools_for=log.tools_for)
    binding = engine.register("plans", create_dynamic_workflow_entrypoint(loader), concurrency=2)
    await loader.registry.register("flood", "plans", WORK_PLAN)
    await loader.registry.register("small", "plans", WORK_PLAN)
    flood = wrap_workflow_binding(binding, tenant_id="flood")
    small = wrap_workflow_binding(binding, tenant_id="small")
    # Work of uneven length (4-16 ms), so that slots free up one at a time.
    await flood.create_batch([{"id": f"f{i}", "params": {"ms": 4 + (i % 7) * 2}}
                              for i in range(FLOOD)])
    started = time.monotonic()
    mine = await small.create_batch([{"id": f"s{i}", "params": {"ms": 8}} for i in range(5)])

    for instance in mine:
        details = await settle(instance, timeout=15)
        assert details.status == "complete", details.error
    elapsed = time.monotonic() - started
    seen = statuses(db_path, "flood")
    order = "".join("s" if tenant == "small" else "f" for tenant, _, _ in log.calls)
    # Most of the flood is still queued when small is done ...
    assert seen["queued"] >= FLOOD // 2, (seen, elapsed, order)
    # ... and small got its fair share on the way: with two tenants on two slots, each of its
    # instances waits for about one flood instance (round-robin), so small is done after ~10
    # runs. 25 leaves room for timing; first come, first served would be ~200.
    assert seen["complete"] <= 25, (seen, elapsed, order)


def owner(row: InstanceRow) -> str:
    assert row.owner is not None
    return row.owner


async def test_a_slot_freed_alone_goes_to_the_tenant_with_fewer_running(
    tmp_path: Path,
) -> None:
    """The storage's claim with explicit times: 'big' queued 10 instances before 'small'
    queued 3, on two slots. Whenever one slot frees while big holds the other, the tenant
    running nothing (small, while it has work queued) must get it."""
    store = SqliteStorage(tmp_path / "store.db")
    await store.open()
    try:
        await store.create_instances(
            WF, [(f"big.{k}", None) for k in range(10)], T0, skip_existing=False, tenant="big"
        )
        await store.create_instances(
            WF, [(f"small.{k}", None) for k in range(3)], T0 + 1, skip_existing=False,
            tenant="small",
        )

        async def claim(now: float) -> list[InstanceRow]:
            return await store.claim("w", now, L0, L0 + 30, {WF: 2}, {WF: None})

        running = await claim(T0 + 2)
        assert sorted(str(r.tenant) for r in running) == ["big", "small"]
        order: list[str] = []
        for k in range(8):  # small's instance always finishes first, one slot at a time
            done = next((r for r in running if r.tenant == "small"), running[0])
            await store.finish(done.iid, owner(done), T0 + 3 + k, "complete", "1", None, [])
            running.remove(done)
            claimed = await claim(T0 + 3 + k)
            assert len(claimed) == 1
            order += [str(r.tenant) for r in claimed]
            running += claimed
        assert order[:2] == ["small", "small"], order
    finally:
        await store.close()


async def test_tenant_concurrency_caps_each_tenants_running_instances(
    engine: af.Engine, db_path: Path
) -> None:
    log = ToolLog()
    loader = Loader(engine, mode="in-process", tools_for=log.tools_for)
    binding = engine.register(
        "plans", create_dynamic_workflow_entrypoint(loader), concurrency=4, tenant_concurrency=1
    )
    tenants = ["t1", "t2", "t3"]
    created = []
    for tenant in tenants:
        await loader.registry.register(tenant, "plans", WORK_PLAN)
        created += await wrap_workflow_binding(binding, tenant_id=tenant).create_batch(
            [{"id": f"i{k}", "params": {"ms": 3 + k % 3}} for k in range(12)]
        )

    peak: Counter[str] = Counter()
    most_at_once = 0

    async def sample() -> None:
        nonlocal most_at_once
        while True:
            running = rows(
                db_path, "SELECT tenant, count(*) FROM instances "
                "WHERE status IN ('running', 'waiting_for_pause') GROUP BY tenant"
            )
            for tenant, n in running:
                peak[str(tenant)] = max(peak[str(tenant)], int(str(n)))
            most_at_once = max(most_at_once, sum(int(str(n)) for _, n in running))
            await asyncio.sleep(0.001)

    sampler = asyncio.create_task(sample())
    try:
        for instance in created:
            details = await settle(instance, timeout=15)
            assert details.status == "complete", details.error
    finally:
        sampler.cancel()
    assert peak and max(peak.values()) == 1, peak
    assert most_at_once >= 2  # the tenants did share the slots
    assert most_at_once <= len(tenants)


async def test_a_free_slot_is_not_left_idle_behind_tenants_at_their_quota(
    tmp_path: Path,
) -> None:
    """Five slots, one running instance per tenant. Four tenants with long backlogs fill four
    slots; a fifth tenant's instance, queued later, must get the fifth slot at once, although
    the backlogs of the tenants at their quota are older."""
    store = SqliteStorage(tmp_path / "store.db")
    await store.open()
    try:
        for t in range(4):
            await store.create_instances(
                WF, [(f"t{t}.{k}", None) for k in range(3)], T0, skip_existing=False,
                tenant=f"t{t}",
            )

        async def claim(now: float) -> list[InstanceRow]:
            return await store.claim("w", now, L0, L0 + 30, {WF: 5}, {WF: 1})

        first = await claim(T0 + 1)
        assert sorted(str(r.tenant) for r in first) == ["t0", "t1", "t2", "t3"]
        await store.create_instances(WF, [("late.0", None)], T0 + 2, skip_existing=False,
                                     tenant="late")
        second = await claim(T0 + 3)
        assert [str(r.tenant) for r in second] == ["late"]
    finally:
        await store.close()
