"""step.wait_for_approval from a plan running in a sandbox process: the decision crosses the
process boundary with everything the plan reads (approved, reason, by, comment, data, edited,
version, at), and a timeout reaches the plan as a rejection or as a catchable error."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import agentflow as af
from agentflow.dispatch import (
    CodeRegistry,
    Loader,
    TenantBinding,
    create_dynamic_workflow_entrypoint,
    wrap_workflow_binding,
)
from planners import Agent, LLMPlanner, ScriptedChatModel
from sandbox.process import SandboxPool
from tests.approvals.conftest import at, open_gates
from tests.conftest import drive
from tests.dispatch._support import settle

PLAN = '''\
async def run(event, step):
    order = event.payload
    decision = await step.wait_for_approval(
        "ship", prompt="Ship " + order["item"] + "?", data={"item": order["item"], "qty": 1},
        timeout="1 hour", on_timeout=order.get("on_timeout", "reject"))
    seen = {"approved": decision.approved, "reason": decision.reason, "by": decision.by,
            "comment": decision.comment, "data": decision.data, "edited": decision.edited,
            "version": decision.version,
            "at": decision.at.isoformat() if decision.at else None}
    if decision.approved:
        shipped = await step.do("ship it", lambda: tools.ship(decision.data))
        return {"shipped": shipped, "seen": seen}
    return {"shipped": None, "seen": seen}
'''

CATCHING = '''\
async def run(event, step):
    try:
        await step.wait_for_approval("ship", prompt="Ship?", timeout="1 hour",
                                     on_timeout="raise")
    except WorkflowTimeoutError as exc:
        return {"caught": "WorkflowTimeoutError", "message": str(exc)[:20]}
    return {"caught": None}
'''


class Shipments:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def tools_for(self, tenant: str) -> dict[str, Any]:
        def ship(order: Any) -> str:
            self.calls.append((tenant, order))
            return f"{tenant} shipped {order['qty']} x {order['item']}"

        return {"ship": ship}


@pytest.fixture
async def pool() -> AsyncIterator[SandboxPool]:
    async with SandboxPool(size=1, max_size=3) as started:
        yield started


@pytest.fixture
def shipments() -> Shipments:
    return Shipments()


@pytest.fixture
async def acme(engine: af.Engine, pool: SandboxPool, shipments: Shipments) -> TenantBinding:
    loader = Loader(engine, mode="process", pool=pool, tools_for=shipments.tools_for)
    binding = engine.register("sandboxed", create_dynamic_workflow_entrypoint(loader))
    registry = CodeRegistry(engine)
    await registry.register("acme", "sandboxed", PLAN)
    await registry.register("acme", "catching", CATCHING)
    return wrap_workflow_binding(binding, tenant_id="acme")


async def test_an_approval_crosses_into_the_sandbox_process(
    acme: TenantBinding, clock: af.FakeClock, shipments: Shipments,
) -> None:
    instance = await acme.create("o1", params={"item": "anvil"})
    [request] = await open_gates(instance)
    code = await instance.code()
    assert request.version == code.sha256
    assert request.prompt == "Ship anvil?" and request.data == {"item": "anvil", "qty": 1}
    await clock.advance(5)
    when = clock.now()
    await instance.approve("ship", by="ada", comment="two of them",
                           data={"item": "anvil", "qty": 2}, version=code.sha256)
    details = await settle(instance)
    assert details.status == "complete", details.error
    assert details.output == {
        "shipped": "acme shipped 2 x anvil",
        "seen": {"approved": True, "reason": "approved", "by": "ada",
                 "comment": "two of them", "data": {"item": "anvil", "qty": 2},
                 "edited": True, "version": code.sha256, "at": at(when).isoformat()},
    }
    assert shipments.calls == [("acme", {"item": "anvil", "qty": 2})]


async def test_a_rejection_in_the_sandbox_takes_the_other_branch(
    acme: TenantBinding, shipments: Shipments,
) -> None:
    instance = await acme.create("o2", params={"item": "gear"})
    await open_gates(instance)
    await instance.reject(by="bob", comment="out of stock")
    details = await settle(instance)
    assert details.status == "complete", details.error
    assert details.output["shipped"] is None
    seen = details.output["seen"]
    assert (seen["approved"], seen["reason"], seen["by"], seen["comment"]) == (
        False, "rejected", "bob", "out of stock")
    assert seen["data"] == {"item": "gear", "qty": 1} and seen["edited"] is False
    assert shipments.calls == []


async def test_a_timeout_reaches_the_sandboxed_plan_as_a_rejection(
    engine: af.Engine, clock: af.FakeClock, acme: TenantBinding, shipments: Shipments,
) -> None:
    instance = await acme.create("o3", params={"item": "bolt"})
    await open_gates(instance)
    details = await drive(engine, clock, instance._instance)
    assert details.status == "complete", details.error
    seen = details.output["seen"]
    assert (seen["approved"], seen["reason"], seen["by"], seen["at"]) == (
        False, "timeout", None, None)
    assert shipments.calls == []


async def test_on_timeout_raise_is_catchable_in_the_sandbox(
    engine: af.Engine, clock: af.FakeClock, acme: TenantBinding,
) -> None:
    catching = wrap_workflow_binding(acme, tenant_id="acme", plan="catching")
    instance = await catching.create("o4")
    await open_gates(instance)
    details = await drive(engine, clock, instance._instance)
    assert details.status == "complete", details.error
    assert details.output["caught"] == "WorkflowTimeoutError"


# -- an agent's plan in the sandbox, with a gated tool ---------------------------------------------
AGENT_PLAN = '''\
```python
async def run(event, step):
    decision = await step.wait_for_approval(
        "approve deploy", prompt="Deploy " + event.payload["version"] + "?",
        data={"version": event.payload["version"]}, timeout="1 hour")
    if not decision.approved:
        return {"deployed": None, "reason": decision.reason, "comment": decision.comment}
    done = await step.do("deploy", lambda: tools.deploy(decision.data["version"]))
    return {"deployed": done, "by": decision.by}
```
'''


@pytest.mark.parametrize("approve", [True, False], ids=["approved", "rejected"])
async def test_an_agents_sandboxed_plan_gates_its_tool_on_the_decision(
    engine: af.Engine, tmp_path: Path, approve: bool,
) -> None:
    deployed: list[str] = []

    def deploy(version: str) -> str:
        """Deploy a version to production."""
        deployed.append(version)
        return f"v{version} live"

    async with Agent(engine, LLMPlanner(ScriptedChatModel([AGENT_PLAN])), [deploy],
                     tenant_id="ops", needs_approval=["deploy"], sandbox="process",
                     max_revisions=0, workflow="agent-sandboxed") as agent:
        instance = await agent.start("deploy 1.4", params={"version": "1.4"}, id="dep")
        [request] = await open_gates(instance)
        assert request.gate == "approve deploy" and request.data == {"version": "1.4"}
        assert request.version == (await instance.code()).sha256
        if approve:
            await instance.approve(by="ada")
        else:
            await instance.reject(by="ada", comment="not today")
        details = await settle(instance, timeout=15)
    assert details.status == "complete", details.error
    if approve:
        assert details.output == {"deployed": "v1.4 live", "by": "ada"}
        assert deployed == ["1.4"]
    else:
        assert details.output == {"deployed": None, "reason": "rejected",
                                  "comment": "not today"}
        assert deployed == []
