"""Approvals of dispatched (tenant) plans: each tenant sees and decides only its own gates,
requests carry the pinned code's sha256, and an upgrade makes a pending decision stale."""

from __future__ import annotations

import pytest

import agentflow as af
from agentflow.dispatch import (
    CodeRef,
    CodeRegistry,
    Loader,
    TenantBinding,
    create_dynamic_workflow_entrypoint,
)
from tests.approvals.conftest import open_gates
from tests.dispatch._support import WORKFLOW, Dynamic, ToolLog, settle


def buying_plan(tag: str) -> str:
    return f'''\
async def run(event, step):
    item = event.payload["item"]
    price = await step.do("price", lambda: tools.lookup(item))
    decision = await step.wait_for_approval(
        "buy", prompt="Buy " + item + "?", data={{"item": item, "price": price}},
        timeout="1 day")
    if not decision.approved:
        return {{"tag": {tag!r}, "bought": None, "reason": decision.reason,
                "comment": decision.comment}}
    return {{"tag": {tag!r}, "bought": decision.data, "by": decision.by,
            "version": decision.version, "edited": decision.edited}}
'''


@pytest.fixture
def dynamic(engine: af.Engine) -> Dynamic:
    log = ToolLog()
    loader = Loader(engine, mode="in-process", tools_for=log.tools_for, capacity=16)
    binding = engine.register(WORKFLOW, create_dynamic_workflow_entrypoint(loader))
    return Dynamic(engine, binding, CodeRegistry(engine), loader, log)


async def two_tenants(dynamic: Dynamic) -> tuple[TenantBinding, TenantBinding, CodeRef,
                                                  CodeRef]:
    acme_code = await dynamic.registry.register("acme", WORKFLOW, buying_plan("acme v1"))
    globex_code = await dynamic.registry.register("globex", WORKFLOW, buying_plan("globex v1"))
    return dynamic.tenant("acme"), dynamic.tenant("globex"), acme_code, globex_code


async def test_each_tenant_lists_only_its_own_gates_with_its_code_version(
    dynamic: Dynamic, engine: af.Engine,
) -> None:
    acme, globex, acme_code, globex_code = await two_tenants(dynamic)
    a = await acme.create("order-1", params={"item": "anvil"})
    g = await globex.create("order-1", params={"item": "gear"})
    await open_gates(a)
    await open_gates(g)

    [mine] = await acme.approvals()
    assert mine.instance_id == "order-1"  # as the tenant knows it
    assert mine.tenant_id == "acme" and mine.workflow_name == WORKFLOW
    assert mine.gate == "buy" and mine.prompt == "Buy anvil?"
    assert mine.data == {"item": "anvil", "price": "acme:anvil"}
    assert mine.version == acme_code.sha256 == (await a.code()).sha256
    assert await a.approvals() == [mine]

    [theirs] = await globex.approvals()
    assert (theirs.instance_id, theirs.tenant_id) == ("order-1", "globex")
    assert theirs.version == globex_code.sha256 != mine.version
    assert theirs.data == {"item": "gear", "price": "globex:gear"}

    # the engine's inbox (the operator's view) has both, under internal ids
    everything = await engine.approvals()
    assert sorted((r.instance_id, r.tenant_id) for r in everything) == [
        ("acme.order-1", "acme"), ("globex.order-1", "globex")]
    assert [r.instance_id for r in await engine.approvals(tenant="globex")] == [
        "globex.order-1"]
    assert await engine.approvals(tenant="initech") == []
    assert await dynamic.tenant("initech").approvals() == []


async def test_a_tenant_cannot_reach_another_tenants_gate(dynamic: Dynamic) -> None:
    acme, globex, acme_code, _ = await two_tenants(dynamic)
    a = await acme.create("only-acme", params={"item": "anvil"})
    await open_gates(a)
    with pytest.raises(af.InstanceNotFoundError):
        await globex.get("only-acme")
    assert await globex.approvals() == []
    assert len(await acme.approvals()) == 1  # untouched

    mine = await acme.get("only-acme")
    await mine.approve("buy", by="wile", version=acme_code.sha256)
    details = await settle(mine)
    assert details.status == "complete", details.error
    assert details.id == "only-acme"
    assert details.output == {"tag": "acme v1", "bought": {"item": "anvil",
                                                           "price": "acme:anvil"},
                              "by": "wile", "version": acme_code.sha256, "edited": False}


async def test_a_decision_naming_another_version_is_stale(dynamic: Dynamic) -> None:
    acme, _, acme_code, globex_code = await two_tenants(dynamic)
    a = await acme.create("v", params={"item": "anvil"})
    await open_gates(a)
    with pytest.raises(af.StaleApprovalError, match=globex_code.sha256):
        await a.approve(version=globex_code.sha256)
    assert len(await acme.approvals()) == 1
    await a.reject(by="wile", comment="too dear", version=acme_code.sha256)
    details = await settle(a)
    assert details.output == {"tag": "acme v1", "bought": None, "reason": "rejected",
                              "comment": "too dear"}
    assert await acme.approvals() == []


async def test_tenant_edits_reach_the_plan(dynamic: Dynamic) -> None:
    acme, _, _, _ = await two_tenants(dynamic)
    a = await acme.create("edit", params={"item": "anvil"})
    await open_gates(a)
    await a.approve(data={"item": "anvil", "price": "discounted"})
    details = await settle(a)
    assert details.output["bought"] == {"item": "anvil", "price": "discounted"}
    assert details.output["edited"] is True


async def test_after_an_upgrade_the_pending_decision_is_stale(dynamic: Dynamic) -> None:
    acme, _, v1, _ = await two_tenants(dynamic)
    a = await acme.create("up", params={"item": "anvil"})
    [request] = await open_gates(a)
    assert request.version == v1.sha256
    v2 = await dynamic.registry.register("acme", WORKFLOW, buying_plan("acme v2"))
    assert await a.upgrade() == v2
    # Refused whether the new code has asked again yet (then: another version asked) or not
    # (then: the code changed since the request).
    with pytest.raises(af.StaleApprovalError):
        await a.approve(version=v1.sha256)
    with pytest.raises(af.StaleApprovalError):
        await a.reject(version=v1.sha256)
    assert (await a.status()).status in ("waiting", "queued", "running")


async def test_after_an_upgrade_the_gate_can_be_decided_under_the_new_version(
    dynamic: Dynamic,
) -> None:
    acme, _, _, _ = await two_tenants(dynamic)
    a = await acme.create("up2", params={"item": "anvil"})
    await open_gates(a)
    v2 = await dynamic.registry.register("acme", WORKFLOW, buying_plan("acme v2"))
    await a.upgrade()
    await settle(a, "waiting")
    await a.approve(by="wile", version=v2.sha256)
    details = await settle(a)
    assert details.output["tag"] == "acme v2"
    assert details.output["version"] == v2.sha256
