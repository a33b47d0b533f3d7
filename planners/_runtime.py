"""One registered dynamic workflow per engine that runs every agent's plans.

Agents on the same engine share it; each tenant's plans get that tenant's tools, with the
gated ones wrapped so they refuse to act without an approval."""

from __future__ import annotations

import weakref
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal, cast

import agentflow as af
import sandbox
from agentflow.dispatch import (
    DispatchRequest,
    Loader,
    TenantBinding,
    create_dynamic_workflow_entrypoint,
    wrap_workflow_binding,
)
from sandbox.process import SandboxPool

from . import gates
from .reuse import AgentStep, Key, Seed, finished_steps, refusing_tools
from .tools import Tool

Mode = Literal["process", "in-process"]
Runner = Callable[[Any, Any], Awaitable[Any]]

_RUNTIMES: weakref.WeakKeyDictionary[af.Engine, dict[str, AgentRuntime]] = (
    weakref.WeakKeyDictionary())


def runtime_for(engine: af.Engine, workflow: str, mode: Mode,
                pool: SandboxPool | None) -> AgentRuntime:
    runtimes = _RUNTIMES.setdefault(engine, {})
    runtime = runtimes.get(workflow)
    if runtime is None:
        runtime = runtimes[workflow] = AgentRuntime(engine, workflow, mode, pool)
    elif runtime.mode != mode or (pool is not None and pool is not runtime.pool):
        raise af.InvalidArgumentError(
            f"agents on workflow {workflow!r} of this engine already run plans with "
            f"sandbox={runtime.mode!r} and another pool; use the same settings or another "
            "workflow name"
        )
    return runtime


class AgentRuntime:
    def __init__(self, engine: af.Engine, workflow: str, mode: Mode,
                 pool: SandboxPool | None) -> None:
        self.engine = engine
        self.workflow = workflow
        self.mode = mode
        self.owns_pool = mode == "process" and pool is None
        self.pool = SandboxPool() if self.owns_pool else pool
        self.tools: dict[str, dict[str, Tool]] = {}
        self.loader = Loader(engine, tools_for=self._granted, mode=mode, pool=self.pool)
        self._seeds: OrderedDict[tuple[str, str], dict[Key, Seed]] = OrderedDict()
        self._started = False
        self._registered = False  # stays registered on the engine: the engine cannot forget
        self.users = 0

    def grant(self, tenant_id: str, tools: dict[str, Tool]) -> None:
        current = self.tools.get(tenant_id)
        if current is not None and _shape(current) != _shape(tools):
            raise af.InvalidArgumentError(
                f"tenant {tenant_id!r} already has an agent on this engine with other tools "
                f"({sorted(current)}); give every agent of a tenant the same tools"
            )
        self.tools[tenant_id] = tools

    def binding(self, tenant_id: str, **metadata: Any) -> TenantBinding:
        return wrap_workflow_binding(self.engine.binding(self.workflow), tenant_id=tenant_id,
                                     **metadata)

    async def start(self) -> None:
        """Start the sandbox pool, then register the workflow (so the worker never runs a
        plan before the pool is up)."""
        if self._started:
            return
        if self.owns_pool:
            if self.pool is None:  # closed before: a fresh pool and loader
                self.pool = SandboxPool()
                self.loader = Loader(self.engine, tools_for=self._granted, mode=self.mode,
                                     pool=self.pool)
            await self.pool.start()
        if not self._registered:
            self.engine.register(self.workflow, create_dynamic_workflow_entrypoint(self._load))
            self._registered = True
        self._started = True

    async def close(self) -> None:
        """Stop the sandbox processes this runtime started. The workflow stays registered;
        the next agent starts them again."""
        if self.owns_pool and self.pool is not None:
            await self.pool.close()
            self.pool = None
        self._started = False

    def _granted(self, tenant_id: str) -> dict[str, Callable[..., Any]]:
        tools = self.tools.get(tenant_id, {})
        return {name: gates.guard(name, t.fn) if t.needs_approval else t.fn
                for name, t in tools.items()}

    async def _load(self, request: DispatchRequest) -> Runner:
        base = cast(Runner, await self.loader(request))  # it takes any step-like object
        meta = request.metadata.get("agent") or {}
        reuse_from = meta.get("reuse_from")
        plan_gate = meta.get("approve_plan")
        scoped = self.mode == "in-process" and any(
            t.needs_approval for t in self.tools.get(request.tenant_id, {}).values())

        async def run(event: af.Event, step: Any) -> Any:
            seeds = (await self.seeds(request.tenant_id, str(reuse_from))
                     if reuse_from else None)
            token = gates.begin_run()
            try:
                if isinstance(plan_gate, dict):
                    # The engine's own step: approving the plan grants no gated tool call.
                    await approve_plan(step, plan_gate)
                return await base(event, AgentStep(step, seeds, scope_bodies=scoped))
            finally:
                gates.end_run(token)

        return run

    async def seeds(self, tenant_id: str, instance_id: str) -> dict[Key, Seed]:
        """The reusable steps of a finished run (computed once, then cached)."""
        key = (tenant_id, instance_id)
        cached = self._seeds.get(key)
        if cached is not None:
            self._seeds.move_to_end(key)
            return cached
        old = await self.binding(tenant_id).get(instance_id)
        details = await old.status()
        source = await self.loader.registry.source(await old.code())
        names = sorted(self.tools.get(tenant_id, {}))
        refusing = refusing_tools(names)
        if self.mode == "process" and self.pool is not None:
            runner = self.pool.runner(source, tools=refusing)
        else:
            runner = sandbox.compile_plan(source, tools=names).runner(tools=refusing)
        assert details.created_at is not None
        event = af.Event(details.params, details.created_at, old.id, self.workflow)
        seeds = await finished_steps(runner, event, await old.steps())
        self._seeds[key] = seeds
        if len(self._seeds) > 256:
            self._seeds.popitem(last=False)
        return seeds


PLAN_GATE = "agentflow: approve plan"


class PlanNotApprovedError(af.NonRetryableError):
    """A person rejected the plan (or nobody approved it in time); the agent may revise it
    with their comment."""


async def approve_plan(step: Any, gate: dict[str, Any]) -> None:
    decision = await step.wait_for_approval(
        PLAN_GATE, prompt=str(gate["prompt"]), data=gate.get("data"),
        timeout=gate.get("timeout", "24 hours"))
    if not decision.approved:
        who = f" by {decision.by}" if decision.by else ""
        why = f": {decision.comment}" if decision.comment else ""
        reason = "nobody approved it in time" if decision.reason == "timeout" else (
            f"rejected{who}{why}")
        raise PlanNotApprovedError(f"the plan was not approved: {reason}")


def _shape(tools: Mapping[str, Tool]) -> dict[str, tuple[Any, bool]]:
    return {name: (t.fn, t.needs_approval) for name, t in tools.items()}
