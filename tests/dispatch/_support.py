"""Shared pieces of the dispatch suite: plan sources, per-tenant tools that record who called
them, a dynamic workflow on the real engine, and a bounded wait for tenant instances."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import agentflow as af
from agentflow.dispatch import (
    ENVELOPE_KEY,
    CodeRegistry,
    Loader,
    TenantBinding,
    wrap_workflow_binding,
)
from tests.conftest import rows

WORKFLOW = "plans"  # the one registered workflow; also the default plan name of a tenant
FINISHED = ("complete", "errored", "terminated")


def plan(tag: str, *, tool: str = "lookup", sleep: bool = False, wait: bool = False) -> str:
    """A plan that calls ``tools.<tool>(tag)`` in a step, optionally sleeps an hour or waits
    for a 'go' event, and returns what it saw: its tag proves which code ran."""
    lines = [
        "async def run(event, step):",
        f"    seen = await step.do('look', lambda: tools.{tool}({tag!r}))",
    ]
    if sleep:
        lines.append("    await step.sleep('nap', '1 hour')")
    if wait:
        lines.append("    await step.wait_for_event('gate', type='go', timeout='1 day')")
    lines.append(
        f"    return {{'tag': {tag!r}, 'params': event.payload, 'id': event.instance_id, "
        "'seen': seen}"
    )
    return "\n".join(lines) + "\n"


WORK_PLAN = (
    "async def run(event, step):\n"
    "    return await step.do('work', lambda: tools.work(event.payload['ms']))\n"
)


@dataclass
class ToolLog:
    """Every tenant gets ``lookup`` (its own implementation), ``<tenant>_only`` and ``work``;
    each call is recorded with the tenant whose tool ran."""

    calls: list[tuple[str, str, Any]] = field(default_factory=list)
    granted: list[str] = field(default_factory=list)

    def tools_for(self, tenant: str) -> dict[str, Callable[..., Any]]:
        self.granted.append(tenant)

        def lookup(value: Any) -> str:
            self.calls.append((tenant, "lookup", value))
            return f"{tenant}:{value}"

        def only(value: Any) -> str:
            self.calls.append((tenant, f"{tenant}_only", value))
            return f"{tenant} only"

        async def work(ms: float) -> str:
            self.calls.append((tenant, "work", ms))
            await asyncio.sleep(ms / 1000)
            return tenant

        return {"lookup": lookup, f"{tenant}_only": only, "work": work}

    def tenants_called(self) -> set[str]:
        return {tenant for tenant, _, _ in self.calls}


@dataclass
class Dynamic:
    """One registered dynamic workflow with its registry, loader and tools."""

    engine: af.Engine
    binding: af.WorkflowBinding
    registry: CodeRegistry
    loader: Loader
    log: ToolLog

    def tenant(self, tenant_id: str, **metadata: Any) -> TenantBinding:
        return wrap_workflow_binding(self.binding, tenant_id=tenant_id, **metadata)


class HasStatus(Protocol):
    async def status(self) -> af.InstanceDetails: ...


async def settle(instance: HasStatus, *statuses: str, timeout: float = 5.0) -> af.InstanceDetails:
    """Real-time wait (bounded) until the instance reaches one of ``statuses``."""
    wanted = statuses or FINISHED

    async def poll() -> af.InstanceDetails:
        while True:
            details = await instance.status()
            if details.status in wanted:
                return details
            await asyncio.sleep(0.003)

    try:
        return await asyncio.wait_for(poll(), timeout)
    except TimeoutError:
        details = await instance.status()
        raise AssertionError(
            f"{instance!r} is {details.status} (error {details.error}), not {wanted}"
        ) from None


async def wake(clock: af.FakeClock, instance: HasStatus, seconds: float = 3600) -> None:
    """Let a sleeping instance's timer pass (it must be waiting first)."""
    await settle(instance, "waiting")
    await clock.advance(seconds)


def stored(db_path: Path, internal_id: str) -> tuple[str | None, Any]:
    """(tenant column, decoded params) of an instance, read straight from the file."""
    found = rows(db_path, "SELECT tenant, params FROM instances WHERE id = ?", internal_id)
    assert len(found) == 1, found
    tenant, params = found[0]
    assert tenant is None or isinstance(tenant, str)
    assert params is None or isinstance(params, str)
    return tenant, None if params is None else json.loads(params)


def envelope_of(db_path: Path, internal_id: str) -> dict[str, Any]:
    _, params = stored(db_path, internal_id)
    assert isinstance(params, dict) and isinstance(params.get(ENVELOPE_KEY), dict), params
    envelope: dict[str, Any] = params[ENVELOPE_KEY]
    return envelope
