"""The envelope: stored params carry the tenant, the pinned code and the metadata around the
tenant's own params; tenants see only their own params and ids."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import agentflow as af
from agentflow.dispatch import (
    ENVELOPE_KEY,
    DispatchRequest,
    Loader,
    create_dynamic_workflow_entrypoint,
    wrap_workflow_binding,
)
from agentflow.workflow import Runner
from tests.dispatch._support import Dynamic, ToolLog, plan, settle, stored


async def test_create_wraps_params_with_the_metadata_and_the_code_ref(
    dynamic: Dynamic, db_path: Path
) -> None:
    ref = await dynamic.registry.register("acme", "release", plan("acme"))
    acme = dynamic.tenant("acme", plan="release", region="eu")
    instance = await acme.create("order-1", params={"n": 1, "tags": ["a"]})
    assert instance.id == "order-1"

    tenant, params = stored(db_path, "acme.order-1")
    assert tenant == "acme"
    assert params == {
        ENVELOPE_KEY: {
            "tenant_id": "acme",
            "code": {"tenant_id": "acme", "name": "release", "sha256": ref.sha256},
            "metadata": {"plan": "release", "region": "eu"},
        },
        "params": {"n": 1, "tags": ["a"]},
    }
    details = await settle(instance)
    assert details.status == "complete", details.error
    assert details.output["params"] == {"n": 1, "tags": ["a"]}
    assert details.output["id"] == "order-1"


async def test_the_params_key_is_present_even_when_params_is_none(
    dynamic: Dynamic, db_path: Path
) -> None:
    await dynamic.registry.register("acme", "plans", plan("acme"))
    instance = await dynamic.tenant("acme").create("bare")
    _, params = stored(db_path, "acme.bare")
    assert isinstance(params, dict)
    assert "params" in params and params["params"] is None
    assert set(params) == {ENVELOPE_KEY, "params"}
    details = await settle(instance)
    assert details.status == "complete", details.error
    assert details.params is None
    assert details.output["params"] is None


async def test_params_that_look_like_an_envelope_cannot_change_tenant_or_code(
    dynamic: Dynamic, db_path: Path
) -> None:
    acme_ref = await dynamic.registry.register("acme", "plans", plan("acme", tool="acme_only"))
    await dynamic.registry.register("globex", "plans", plan("globex"))
    forged: dict[str, Any] = {
        ENVELOPE_KEY: {"tenant_id": "acme", "code": acme_ref.as_dict(),
                       "metadata": {"plan": "plans"}},
        "params": {"steal": True},
    }
    instance = await dynamic.tenant("globex").create("forger", params=forged)
    details = await settle(instance)
    assert details.status == "complete", details.error
    assert details.output["tag"] == "globex"  # globex's own code ran
    assert details.output["params"] == forged  # and saw its params verbatim
    assert details.output["seen"] == "globex:globex"
    assert details.params == forged
    assert dynamic.log.tenants_called() == {"globex"}
    tenant, params = stored(db_path, "globex.forger")
    assert tenant == "globex"
    assert params[ENVELOPE_KEY]["tenant_id"] == "globex"
    assert params["params"] == forged
    assert (await instance.code()).tenant_id == "globex"


async def test_wrapping_a_wrapped_binding_merges_metadata_without_nesting(
    engine: af.Engine, db_path: Path
) -> None:
    requests: list[DispatchRequest] = []
    log = ToolLog()
    loader = Loader(engine, mode="in-process", tools_for=log.tools_for)

    async def load(request: DispatchRequest) -> Runner:
        requests.append(request)
        return await loader(request)

    binding = engine.register("plans", create_dynamic_workflow_entrypoint(load))
    await loader.registry.register("acme", "plans", plan("acme"))
    inner = wrap_workflow_binding(binding, tenant_id="acme", region="eu", team="dev")
    # wrap_workflow_binding is typed to take a WorkflowBinding only, yet accepts a wrapped one.
    outer = wrap_workflow_binding(inner, tenant_id="acme", team="ops")  # type: ignore[arg-type]
    assert outer.tenant_id == "acme"
    instance = await outer.create("job", params={"x": 1})
    _, params = stored(db_path, "acme.job")
    assert params["params"] == {"x": 1}  # the user's params, not another envelope
    assert params[ENVELOPE_KEY]["metadata"] == {"region": "eu", "team": "ops"}
    assert json.dumps(params).count(ENVELOPE_KEY) == 1
    details = await settle(instance)
    assert details.status == "complete", details.error
    assert details.output["params"] == {"x": 1}
    assert [(r.tenant_id, r.metadata) for r in requests] == [
        ("acme", {"region": "eu", "team": "ops"})
    ]

    with pytest.raises(af.InvalidArgumentError):
        wrap_workflow_binding(outer, tenant_id="globex")  # type: ignore[arg-type]


async def test_metadata_must_be_json(dynamic: Dynamic) -> None:
    with pytest.raises(af.InvalidArgumentError):
        dynamic.tenant("acme", when=object())
    with pytest.raises(af.InvalidIdError):
        dynamic.tenant("not a tenant")


async def test_status_and_events_show_the_tenants_own_id_and_params(
    dynamic: Dynamic, clock: af.FakeClock
) -> None:
    await dynamic.registry.register("acme", "plans", plan("acme", sleep=True))
    instance = await dynamic.tenant("acme").create("job", params={"secret": "mine"})
    await settle(instance, "waiting")
    waiting = await instance.status()
    assert waiting.id == "job"
    assert waiting.params == {"secret": "mine"}
    await clock.advance(3600)
    details = await settle(instance)
    assert details.status == "complete", details.error
    assert details.id == "job" and details.params == {"secret": "mine"}

    events = [e async for e in instance.events(follow=False)]
    assert {e.type for e in events} >= {"instance.queued", "step.completed", "instance.completed"}
    assert {e.instance_id for e in events} == {"job"}
    assert ENVELOPE_KEY not in json.dumps([e.data for e in events], default=str)
    # events() follows live and ends once the instance has finished
    followed = [e.type async for e in instance.events()]
    assert followed[-1] == "instance.completed"


async def test_metadata_added_when_rewrapping_must_be_json_too(dynamic: Dynamic) -> None:
    await dynamic.registry.register("acme", "plans", plan("acme"))
    acme = dynamic.tenant("acme")
    with pytest.raises(af.InvalidArgumentError):
        wrap_workflow_binding(acme, tenant_id="acme", when=object())  # type: ignore[arg-type]
