"""The Loader: an LRU of loaded tenant code by (tenant, sha256), each tenant with its own
tools; eviction never breaks an instance. Also the loader in sandbox processes."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

import agentflow as af
from agentflow.dispatch import (
    CodeRef,
    CodeRegistry,
    DispatchRequest,
    Loader,
    create_dynamic_workflow_entrypoint,
    wrap_workflow_binding,
)
from sandbox.process import Limits, SandboxPool
from tests.dispatch._support import Dynamic, ToolLog, plan, settle, wake

BARE = "async def run(event, step):\n    return {!r}\n"  # needs no tools


def request(ref: CodeRef) -> DispatchRequest:
    return DispatchRequest(ref.tenant_id, ref, {})


async def test_the_cache_is_an_lru_by_tenant_and_sha_with_a_capacity(
    engine: af.Engine, registry: CodeRegistry
) -> None:
    log = ToolLog()
    loader = Loader(engine, mode="in-process", tools_for=log.tools_for, capacity=2)
    acme = await registry.register("acme", "plans", plan("acme"))
    globex = await registry.register("globex", "plans", plan("globex"))
    initech = await registry.register("initech", "plans", plan("initech"))
    assert len(loader) == 0

    first = await loader(request(acme))
    await loader(request(globex))
    assert (loader.hits, loader.misses, len(loader)) == (0, 2, 2)
    assert await loader(request(acme)) is first  # a hit returns the cached runner
    assert (loader.hits, loader.misses) == (1, 2)
    await loader(request(initech))  # evicts globex, the least recently used
    assert (loader.hits, loader.misses, len(loader)) == (1, 3, 2)
    assert await loader(request(acme)) is first
    assert (loader.hits, loader.misses) == (2, 3)
    await loader(request(globex))  # reloaded: a miss, evicting initech
    assert (loader.hits, loader.misses, len(loader)) == (2, 4, 2)
    await loader(request(acme))
    assert (loader.hits, loader.misses) == (3, 4)
    assert log.granted == ["acme", "globex", "initech", "globex"]  # tools per load


async def test_versions_of_one_tenant_are_cached_separately(
    engine: af.Engine, registry: CodeRegistry
) -> None:
    loader = Loader(engine, mode="in-process", capacity=4)
    v1 = await registry.register("acme", "plans", BARE.format("v1"))
    v2 = await registry.register("acme", "plans", BARE.format("v2"))
    one, two = await loader(request(v1)), await loader(request(v2))
    assert one is not two
    assert (loader.hits, loader.misses, len(loader)) == (0, 2, 2)
    assert await loader(request(v1)) is one
    # The same sha under another tenant is another entry (and that tenant's own code).
    same = await registry.register("globex", "plans", BARE.format("v1"))
    assert same.sha256 == v1.sha256
    assert await loader(request(same)) is not one
    assert (loader.hits, loader.misses, len(loader)) == (1, 3, 3)


async def test_eviction_while_an_instance_sleeps_does_not_break_it(
    engine: af.Engine, clock: af.FakeClock, registry: CodeRegistry
) -> None:
    log = ToolLog()
    loader = Loader(engine, mode="in-process", tools_for=log.tools_for, capacity=1)
    binding = engine.register("plans", create_dynamic_workflow_entrypoint(loader))
    await registry.register("acme", "plans", plan("acme", sleep=True))
    await registry.register("globex", "plans", plan("globex"))
    sleeper = await wrap_workflow_binding(binding, tenant_id="acme").create("job")
    await settle(sleeper, "waiting")
    other = await wrap_workflow_binding(binding, tenant_id="globex").create("job")
    assert (await settle(other)).output["tag"] == "globex"
    assert len(loader) == 1
    misses = loader.misses

    await wake(clock, sleeper)
    details = await settle(sleeper)
    assert details.status == "complete", details.error
    assert details.output == {"tag": "acme", "params": None, "id": "job",
                              "seen": "acme:acme"}
    assert loader.misses == misses + 1  # acme's code was loaded again on wake
    assert len(loader) == 1


async def test_a_dynamic_workflow_loads_each_code_version_once(dynamic: Dynamic) -> None:
    await dynamic.registry.register("acme", "plans", plan("acme"))
    acme = dynamic.tenant("acme")
    for i in range(5):
        assert (await settle(await acme.create(f"job-{i}"))).status == "complete"
    assert (dynamic.loader.misses, dynamic.loader.hits) == (1, 4)
    assert dynamic.log.granted == ["acme"]


def test_process_mode_needs_a_pool(engine: af.Engine) -> None:
    with pytest.raises(ValueError, match="SandboxPool"):
        Loader(engine)


@pytest.fixture
async def pool() -> AsyncIterator[SandboxPool]:
    async with SandboxPool(size=2, max_size=4, limits=Limits(cpu_seconds=5)) as pool:
        yield pool


async def test_tenants_run_their_code_in_sandbox_processes(
    engine: af.Engine, clock: af.FakeClock, registry: CodeRegistry, pool: SandboxPool
) -> None:
    log = ToolLog()
    loader = Loader(engine, mode="process", pool=pool, tools_for=log.tools_for, capacity=1)
    binding = engine.register("plans", create_dynamic_workflow_entrypoint(loader))
    await registry.register("acme", "plans", plan("acme", sleep=True))
    await registry.register("globex", "plans", plan("globex"))
    await registry.register("initech", "plans", plan("initech", tool="acme_only"))
    acme = await wrap_workflow_binding(binding, tenant_id="acme").create("job", params=[1])
    globex = await wrap_workflow_binding(binding, tenant_id="globex").create("job")
    thief = await wrap_workflow_binding(binding, tenant_id="initech").create("job")

    assert (await settle(globex, timeout=20)).output == {
        "tag": "globex", "params": None, "id": "job", "seen": "globex:globex"}
    stolen = await settle(thief, timeout=20)
    assert stolen.status == "errored"
    assert stolen.error is not None and "acme_only" in stolen.error.message
    await settle(acme, "waiting", timeout=20)
    await clock.advance(3600)  # acme's runner was evicted meanwhile (capacity 1)
    details = await settle(acme, timeout=20)
    assert details.status == "complete", details.error
    assert details.output == {"tag": "acme", "params": [1], "id": "job", "seen": "acme:acme"}
    assert sorted(log.calls) == [("acme", "lookup", "acme"), ("globex", "lookup", "globex")]
