"""Dispatch: one registered workflow, every instance running its own tenant's code with its
own tenant's tools; payloads without an envelope, loader and runner errors fail the instance."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

import agentflow as af
from agentflow.dispatch import (
    ENVELOPE_KEY,
    CodeRef,
    DispatchRequest,
    Loader,
    MissingEnvelopeError,
    create_dynamic_workflow_entrypoint,
    dispatch_workflow,
    wrap_workflow_binding,
)
from agentflow.workflow import Runner
from tests.dispatch._support import Dynamic, ToolLog, plan, settle


async def test_two_tenants_run_their_own_code_with_their_own_tools_on_one_workflow(
    dynamic: Dynamic,
) -> None:
    await dynamic.registry.register("acme", "plans", plan("acme-code"))
    await dynamic.registry.register("globex", "plans", plan("globex-code"))
    acme, globex = dynamic.tenant("acme"), dynamic.tenant("globex")
    a = await acme.create("job", params={"who": "a"})
    g = await globex.create("job", params={"who": "g"})  # the same local id
    a_done, g_done = await settle(a), await settle(g)
    assert a_done.status == g_done.status == "complete", (a_done.error, g_done.error)
    assert a_done.output == {"tag": "acme-code", "params": {"who": "a"}, "id": "job",
                             "seen": "acme:acme-code"}
    assert g_done.output == {"tag": "globex-code", "params": {"who": "g"}, "id": "job",
                             "seen": "globex:globex-code"}
    # Each plan's `lookup` was its own tenant's implementation.
    assert sorted(dynamic.log.calls) == [
        ("acme", "lookup", "acme-code"), ("globex", "lookup", "globex-code"),
    ]


async def test_a_plan_calling_another_tenants_tool_fails(dynamic: Dynamic) -> None:
    await dynamic.registry.register("acme", "plans", plan("acme", tool="acme_only"))
    await dynamic.registry.register("globex", "plans", plan("globex", tool="acme_only"))
    mine = await dynamic.tenant("acme").create("job")
    theirs = await dynamic.tenant("globex").create("job")
    assert (await settle(mine)).status == "complete"
    details = await settle(theirs)
    assert details.status == "errored"
    assert details.error is not None
    assert details.error.name == "PlanRejected"
    assert "unknown-tool" in details.error.message and "acme_only" in details.error.message
    # acme's tool ran once, for acme's own instance only.
    assert dynamic.log.calls == [("acme", "acme_only", "acme")]


async def test_an_instance_created_without_an_envelope_errors_and_says_how_to_fix_it(
    dynamic: Dynamic,
) -> None:
    await dynamic.registry.register("acme", "plans", plan("acme"))
    raw = await dynamic.binding.create("raw", params={"x": 1})
    details = await settle(raw)
    assert details.status == "errored"
    assert details.error is not None
    assert details.error.name == "MissingEnvelopeError"
    assert "wrap_workflow_binding" in details.error.message
    assert dynamic.log.calls == []


async def test_dispatch_workflow_refuses_a_payload_without_an_envelope() -> None:
    loaded: list[DispatchRequest] = []

    def load(request: DispatchRequest) -> Runner:
        loaded.append(request)
        raise AssertionError("must not load")

    for payload in ({"x": 1}, None, [1, 2], {ENVELOPE_KEY: "not a dict"}):
        event = af.Event(payload, datetime.now(UTC), "raw", "plans")
        with pytest.raises(MissingEnvelopeError, match="wrap_workflow_binding"):
            await dispatch_workflow(None, event, None, load)
    assert loaded == []
    assert issubclass(MissingEnvelopeError, af.AgentflowError)


async def test_dispatch_workflow_unwraps_and_passes_the_same_step() -> None:
    ref = CodeRef("acme", "plans", "0" * 64)
    payload = {ENVELOPE_KEY: {"tenant_id": "acme", "code": ref.as_dict(),
                              "metadata": {"m": 1}}, "params": {"p": 2}}
    event = af.Event(payload, datetime.now(UTC), "acme.job", "plans")
    step = object()
    seen: list[Any] = []

    async def runner(tenant_event: af.Event, tenant_step: Any) -> str:
        seen.append((tenant_event, tenant_step))
        return "ran"

    def load(request: DispatchRequest) -> Runner:  # a synchronous loader is allowed
        seen.append(request)
        return runner

    assert await dispatch_workflow({"region": "eu"}, event, step, load) == "ran"
    request, (tenant_event, tenant_step) = seen
    assert request == DispatchRequest("acme", ref, {"m": 1}, {"region": "eu"})
    assert tenant_event == af.Event({"p": 2}, event.timestamp, "job", "plans")
    assert tenant_step is step


async def test_a_loader_error_becomes_the_instances_error(engine: af.Engine) -> None:
    log = ToolLog()
    loader = Loader(engine, mode="in-process", tools_for=log.tools_for)

    class RegistryDown(Exception):
        pass

    async def load(request: DispatchRequest) -> Runner:
        if request.tenant_id == "globex":
            raise RegistryDown(f"cannot load {request.code.name} for {request.tenant_id}")
        return await loader(request)

    binding = engine.register("plans", create_dynamic_workflow_entrypoint(load))
    await loader.registry.register("acme", "plans", plan("acme"))
    await loader.registry.register("globex", "plans", plan("globex"))
    ok = await wrap_workflow_binding(binding, tenant_id="acme").create("job")
    bad = await wrap_workflow_binding(binding, tenant_id="globex").create("job")
    assert (await settle(ok)).status == "complete"
    details = await settle(bad)
    assert details.status == "errored"
    assert details.error == af.ErrorInfo("RegistryDown", "cannot load plans for globex")


async def test_a_runner_error_becomes_the_instances_error(dynamic: Dynamic) -> None:
    source = (
        "async def run(event, step):\n"
        "    n = await step.do('count', lambda: tools.lookup(1))\n"
        "    raise ValueError('plan gave up after ' + n)\n"
    )
    await dynamic.registry.register("acme", "plans", source)
    instance = await dynamic.tenant("acme").create("job")
    details = await settle(instance)
    assert details.status == "errored"
    assert details.error == af.ErrorInfo("ValueError", "plan gave up after acme:1")


async def test_the_entrypoint_passes_its_context_to_the_loader(engine: af.Engine) -> None:
    log = ToolLog()
    loader = Loader(engine, mode="in-process", tools_for=log.tools_for)
    contexts: list[dict[str, Any]] = []

    async def load(request: DispatchRequest) -> Runner:
        contexts.append(dict(request.context))
        return await loader(request)

    binding = engine.register(
        "plans", create_dynamic_workflow_entrypoint(load, context={"region": "eu"})
    )
    await loader.registry.register("acme", "plans", plan("acme"))
    instance = await wrap_workflow_binding(binding, tenant_id="acme").create()
    assert (await settle(instance)).status == "complete"
    assert contexts == [{"region": "eu"}]


@pytest.mark.parametrize(("envelope", "error", "words"), [
    ({"code": {"tenant_id": "acme", "name": "p", "sha256": "0" * 64}}, af.InvalidArgumentError,
     "tenant_id"),
    ({"tenant_id": "acme"}, af.InvalidArgumentError, "code"),
    ({"tenant_id": "acme", "code": "not a dict"}, af.InvalidArgumentError, "malformed"),
    ({"tenant_id": 7, "code": {"tenant_id": 7, "name": "p", "sha256": "0" * 64}},
     af.InvalidArgumentError, "malformed"),
    ({"tenant_id": "acme", "code": {"tenant_id": "acme", "name": "p"}},
     af.InvalidArgumentError, "sha256"),
    ({"tenant_id": "acme", "code": {"tenant_id": "globex", "name": "p", "sha256": "0" * 64}},
     af.InvalidStateError, "another tenant"),
])
async def test_a_malformed_envelope_is_a_typed_error_and_loads_nothing(
    envelope: dict[str, Any], error: type[Exception], words: str, engine: af.Engine,
) -> None:
    loader = Loader(engine, mode="in-process")
    payload = {ENVELOPE_KEY: envelope, "params": None}
    event = af.Event(payload, datetime.now(UTC), "acme.job", "plans")
    with pytest.raises(error, match=words):
        await dispatch_workflow(None, event, None, loader)
    assert loader.hits == loader.misses == 0


async def test_a_loader_hit_is_served_from_its_cache_unless_call_is_overridden(
    engine: af.Engine,
) -> None:
    source = "async def run(event, step):\n    return event.payload['n'] * 2\n"
    loader = Loader(engine, mode="in-process")
    ref = await loader.registry.register("acme", "plans", source)
    payload = {ENVELOPE_KEY: {"tenant_id": "acme", "code": ref.as_dict(), "metadata": {"m": 1}},
               "params": {"n": 21}}
    event = af.Event(payload, datetime.now(UTC), "acme.job", "plans")
    for _ in range(3):
        assert await dispatch_workflow({"c": 1}, event, None, loader) == 42
    assert (loader.hits, loader.misses) == (2, 1)
    assert loader.lookup("acme", ref.sha256) is not None
    assert loader.lookup("acme", "f" * 64) is None
    assert loader.lookup("globex", ref.sha256) is None  # another tenant's key misses

    calls: list[DispatchRequest] = []

    class Checking(Loader):  # decides per request: every dispatch must reach it
        async def __call__(self, request: DispatchRequest) -> Runner:
            calls.append(request)
            return await super().__call__(request)

    checking = Checking(engine, mode="in-process")
    for _ in range(3):
        assert await dispatch_workflow({"c": 1}, event, None, checking) == 42
    assert calls == [DispatchRequest("acme", ref, {"m": 1}, {"c": 1})] * 3
    assert (checking.hits, checking.misses) == (2, 1)


@pytest.mark.parametrize("change", ["extra-code-key", "no-name", "metadata-not-object"])
async def test_a_malformed_envelope_is_refused_whether_or_not_the_code_is_cached(
    change: str, engine: af.Engine,
) -> None:
    source = "async def run(event, step):\n    return 1\n"
    loader = Loader(engine, mode="in-process")
    ref = await loader.registry.register("acme", "plans", source)
    good = {"tenant_id": "acme", "code": ref.as_dict(), "metadata": {}}
    event = af.Event({ENVELOPE_KEY: good, "params": None}, datetime.now(UTC), "acme.j", "plans")
    assert await dispatch_workflow(None, event, None, loader) == 1  # now cached
    bad: dict[str, Any] = {**good, "code": dict(ref.as_dict())}
    if change == "extra-code-key":
        bad["code"]["extra"] = "x"
    elif change == "no-name":
        del bad["code"]["name"]
    else:
        bad["metadata"] = "zz"
    event = af.Event({ENVELOPE_KEY: bad, "params": None}, datetime.now(UTC), "acme.j", "plans")
    for warm in (True, False):
        if not warm:
            loader = Loader(engine, mode="in-process")
        with pytest.raises(af.InvalidArgumentError, match="malformed dispatch envelope"):
            await dispatch_workflow(None, event, None, loader)
