"""Dynamic dispatch at scale: N tenants with distinct code registered in one SQLite file; warm
dispatch (a Loader hit plus the envelope unwrap of ``dispatch_workflow``, calling the tenant's
no-op plan); cold load of a 100-line plan (registry fetch + validate + compile, with an
in-process Loader; with the default process-mode Loader the host fetches and validates and the
sandbox child compiles when a run needs the plan); and the RSS of a Loader that loads many
tenants' code through a bounded cache. Prints one JSON line.

    python bench/dispatch_bench.py [--tenants 100000] [--chunk 1000] [--dispatches 100000]
        [--cold 100] [--memory-tenants 20000] [--capacity 1000]

Targets (issue 5): warm dispatch <= 10 us (median); cold load <= 5 ms (median); memory
bounded by the cache capacity.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import hashlib
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from typing import Any

from _common import environment, percentile, rss_kib
from sandbox_bench import hundred_line_plan

import agentflow as af
import sandbox
from agentflow.dispatch import (
    ENVELOPE_KEY,
    CodeRef,
    CodeRegistry,
    DispatchRequest,
    Loader,
    dispatch_workflow,
)
from sandbox.process import SandboxPool

NAME = "plan"
TOOLS = {"fetch": lambda url: {"url": url}, "deploy": lambda what: what}


def small_plan(k: int) -> str:
    """A tenant's small plan, distinct by a constant; running it does nothing else."""
    return f"async def run(event, step):\n    return {k}\n"


def big_plan(k: int) -> str:
    """The 100-line plan of bench/sandbox_bench.py, made distinct by its constant."""
    source = hundred_line_plan().replace("LIMIT = 10", f"LIMIT = {k}", 1)
    assert len(source.splitlines()) >= 99
    return source


def ref(tenant: str, source: str) -> CodeRef:
    return CodeRef(tenant, NAME, hashlib.sha256(source.encode()).hexdigest())


def tenant_id(i: int) -> str:
    return f"tenant-{i:06d}"


async def register_all(registry: CodeRegistry, n: int, chunk: int) -> float:
    """Register n tenants' plans, ``chunk`` at a time in one gather (their writes share a
    commit); return the seconds taken."""
    start = time.perf_counter()
    for first in range(0, n, chunk):
        await asyncio.gather(*(
            registry.register(tenant_id(i), NAME, small_plan(i))
            for i in range(first, min(n, first + chunk))
        ))
    return time.perf_counter() - start


def tenant_event(code: CodeRef, k: int) -> af.Event:
    """The event a worker hands the dynamic workflow: params as the tenant binding stores them."""
    payload = {
        ENVELOPE_KEY: {"tenant_id": code.tenant_id, "code": code.as_dict(), "metadata": {}},
        "params": {"k": k},
    }
    return af.Event(payload, datetime.now(UTC), f"{code.tenant_id}.job-{k}", "plans")


async def memory(engine: af.Engine, tenants: int, capacity: int) -> tuple[dict[str, Any], Loader]:
    """Load ``tenants`` tenants' code through a Loader of ``capacity``. RSS and live Python
    blocks at the start, once the cache is full, and at a few points after: bounded memory is
    a plateau once the allocator has settled (freed blocks are reused, not returned)."""
    loader = Loader(engine, mode="in-process", capacity=capacity)
    marks = sorted({min(capacity, tenants), *(tenants * q // 4 for q in (1, 2, 3, 4))} - {0})
    gc.collect()
    rss: dict[str, int] = {"0": rss_kib()[0]}
    blocks: dict[str, int] = {"0": sys.getallocatedblocks()}
    start = time.perf_counter()
    for i in range(tenants):
        code = ref(tenant_id(i), small_plan(i))
        await loader(DispatchRequest(code.tenant_id, code, {}))
        if i + 1 in marks:
            gc.collect()
            rss[str(i + 1)] = rss_kib()[0]
            blocks[str(i + 1)] = sys.getallocatedblocks()
    seconds = time.perf_counter() - start
    assert len(loader) == min(capacity, tenants) and loader.misses == tenants
    half, last = str(marks[-3]), str(marks[-1])
    return {
        "memory_tenants_loaded": tenants, "memory_capacity": capacity,
        "memory_loader_len": len(loader), "memory_load_seconds": round(seconds, 2),
        "rss_kib_by_loaded": rss, "python_blocks_by_loaded": blocks,
        "rss_growth_kib_to_full": rss[str(min(capacity, tenants))] - rss["0"],
        "rss_growth_kib_second_half": rss[last] - rss[half],
        "python_blocks_growth_second_half": blocks[last] - blocks[half],
    }, loader


async def warm(loader: Loader, first: int, count: int, dispatches: int) -> dict[str, Any]:
    """Dispatch to tenants whose code is cached (each a Loader hit), one at a time."""
    codes = [ref(tenant_id(i), small_plan(i)) for i in range(first, first + count)]
    events = [tenant_event(code, k) for k, code in enumerate(codes)]
    for event in events:  # make sure every one is cached, and check the result
        assert await dispatch_workflow(None, event, None, loader) == int(
            event.payload[ENVELOPE_KEY]["code"]["tenant_id"].split("-")[1]
        )
    hits, misses = loader.hits, loader.misses
    clock = time.perf_counter_ns
    each: list[int] = []
    rounds = max(1, dispatches // len(events))
    start = time.perf_counter()
    for _ in range(rounds):
        for event in events:
            t0 = clock()
            await dispatch_workflow(None, event, None, loader)
            each.append(clock() - t0)
    total = time.perf_counter() - start
    assert loader.misses == misses and loader.hits == hits + len(each)
    # The baseline: awaiting the cached runner directly with the tenant's own event.
    runner = await loader(DispatchRequest(codes[0].tenant_id, codes[0], {}))
    plain = af.Event({"k": 0}, events[0].timestamp, "job-0", "plans")
    direct: list[int] = []
    no_step: Any = None  # the no-op plans never touch their step
    for _ in range(min(len(each), 20_000)):
        t0 = clock()
        await runner(plain, no_step)
        direct.append(clock() - t0)
    each.sort()
    direct.sort()
    return {
        "warm_dispatches": len(each), "warm_tenants": len(events),
        "warm_dispatch_us_p50": round(statistics.median(each) / 1e3, 2),
        "warm_dispatch_us_p99": round(percentile(each, 99) / 1e3, 2),
        "warm_dispatch_us_mean": round(total / len(each) * 1e6, 2),
        "runner_alone_us_p50": round(statistics.median(direct) / 1e3, 2),
    }


async def cold(engine: af.Engine, registry: CodeRegistry, n: int) -> dict[str, Any]:
    """Loader misses of 100-line plans: fetch from the registry, validate, compile."""
    sources = {f"cold-{i:04d}": big_plan(i) for i in range(n)}
    await asyncio.gather(*(registry.register(t, NAME, s) for t, s in sources.items()))
    loader = Loader(engine, mode="in-process", capacity=n, tools_for=lambda tenant: TOOLS)
    loads, fetches, validates, compiles = [], [], [], []
    for tenant, source in sources.items():
        code = ref(tenant, source)
        start = time.perf_counter()
        await loader(DispatchRequest(tenant, code, {}))
        loads.append(time.perf_counter() - start)
    assert loader.misses == n and loader.hits == 0
    for tenant, source in sources.items():  # where the time goes
        code = ref(tenant, source)
        start = time.perf_counter()
        assert await registry.source(code) == source
        fetches.append(time.perf_counter() - start)
        start = time.perf_counter()
        assert sandbox.validate(source, tools=TOOLS).ok
        validates.append(time.perf_counter() - start)
        start = time.perf_counter()
        # (another text: the loads above left this one in the compile cache)
        sandbox.compile_plan(source + "# again\n", tools=TOOLS).runner(tools=TOOLS)
        compiles.append(time.perf_counter() - start)
    loads.sort()
    # The same misses with mode='process' (the default): the host fetches and validates, and
    # the sandbox child compiles when a run first needs the plan (not timed here).
    process_sources = {f"cold-p{i:04d}": big_plan(n + i) for i in range(n)}
    await asyncio.gather(*(registry.register(t, NAME, s) for t, s in process_sources.items()))
    process_loads = []
    async with SandboxPool(size=1) as pool:
        process_loader = Loader(engine, mode="process", pool=pool, capacity=n,
                                tools_for=lambda tenant: TOOLS)
        for tenant, source in process_sources.items():
            code = ref(tenant, source)
            start = time.perf_counter()
            await process_loader(DispatchRequest(tenant, code, {}))
            process_loads.append(time.perf_counter() - start)

    def ms(values: list[float]) -> float:
        return round(statistics.median(values) * 1e3, 3)

    return {
        "cold_loads": n, "cold_plan_lines": len(next(iter(sources.values())).splitlines()),
        "cold_load_ms_p50": ms(loads), "cold_load_ms_p90": round(percentile(loads, 90) * 1e3, 3),
        "cold_fetch_ms_p50": ms(fetches), "cold_validate_ms_p50": ms(validates),
        "cold_compile_plan_ms_p50": ms(compiles),
        "cold_load_process_mode_ms_p50": ms(process_loads),
    }


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tenants", type=int, default=100_000)
    parser.add_argument("--chunk", type=int, default=1000)
    parser.add_argument("--dispatches", type=int, default=100_000)
    parser.add_argument("--cold", type=int, default=100)
    parser.add_argument("--memory-tenants", type=int, default=20_000)
    parser.add_argument("--capacity", type=int, default=1000)
    args = parser.parse_args()
    memory_tenants = min(args.memory_tenants, args.tenants)
    result: dict[str, Any] = {"bench": "dispatch", "tenants": args.tenants}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "dispatch.db")
        async with af.Engine.open(f"sqlite:///{path}", worker=False) as engine:
            registry = CodeRegistry(engine)
            seconds = await register_all(registry, args.tenants, args.chunk)
            with contextlib.closing(sqlite3.connect(path)) as conn:
                (stored,) = conn.execute("SELECT count(DISTINCT tenant) FROM code").fetchone()
            assert stored == args.tenants, stored
            result.update({
                "register_seconds": round(seconds, 2),
                "register_per_second": round(args.tenants / seconds),
                "register_us_each": round(seconds / args.tenants * 1e6, 1),
                "db_mib": round(os.path.getsize(path) / 2**20, 1),
            })
            mem, loader = await memory(engine, memory_tenants, args.capacity)
            result.update(mem)
            cached = len(loader)
            result.update(await warm(loader, memory_tenants - cached, cached, args.dispatches))
            result.update(await cold(engine, registry, args.cold))
    result.update({
        "targets": {"warm_dispatch_us_p50": 10, "cold_load_ms_p50": 5},
        "meets_warm": result["warm_dispatch_us_p50"] <= 10,
        "meets_cold": result["cold_load_ms_p50"] <= 5,
        **environment(),
    })
    print(json.dumps(result))


if __name__ == "__main__":
    asyncio.run(main())
