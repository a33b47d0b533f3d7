"""Shared pieces of the approvals suite: a gated static workflow that records every Decision
it sees, and bounded real-time waits for open gates."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import pytest

import agentflow as af
from tests.conftest import wait_for

DEFAULT_PROMPT = "Deploy the build to {target}?"


def at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def gated_flow(seen: list[af.Decision]) -> Callable[[af.Event, af.Step], Awaitable[Any]]:
    """A workflow that prepares, asks 'deploy', optionally sleeps, and acts on the decision.

    Params: ``target``, ``timeout``, ``on_timeout``, ``sleep_after`` (a durable sleep after
    the gate, so the run replays the gate), ``second`` (a second gate 'notify' after)."""

    async def flow(event: af.Event, step: af.Step) -> Any:
        p = event.payload or {}
        prepared = await step.do("prepare", lambda: {"target": p.get("target", "prod"),
                                                     "replicas": 3})
        try:
            decision = await step.wait_for_approval(
                "deploy", prompt=DEFAULT_PROMPT.format(target=prepared["target"]),
                data=prepared, timeout=p.get("timeout", "1 hour"),
                on_timeout=p.get("on_timeout", "reject"))
        except af.WorkflowTimeoutError as exc:
            return {"outcome": "caught timeout", "error": type(exc).__name__}
        seen.append(decision)
        if p.get("sleep_after"):
            await step.sleep("cool down", "10 seconds")
        if p.get("second"):
            notify = await step.wait_for_approval("notify", prompt="Tell the customers?",
                                                  timeout="1 hour")
            return {"deploy": decision.approved, "notify": notify.approved}
        if not decision.approved:
            return {"outcome": "skipped", "reason": decision.reason, "by": decision.by,
                    "comment": decision.comment}
        return {"outcome": "deployed", "to": decision.data, "by": decision.by,
                "comment": decision.comment, "edited": decision.edited}

    return flow


async def open_gates(instance: Any, count: int = 1, timeout: float = 5.0) -> list[Any]:
    """Real-time wait until ``instance`` lists ``count`` open gates; returns them."""

    async def poll() -> list[Any]:
        while True:
            found = await instance.approvals()
            if len(found) >= count:
                return list(found)
            await asyncio.sleep(0.005)

    try:
        return await asyncio.wait_for(poll(), timeout)
    except TimeoutError:
        details = await instance.status()
        raise AssertionError(f"{instance!r} has {await instance.approvals()} open "
                             f"({details.status}, {details.error})") from None


async def gate_named(instance: Any, gate: str, timeout: float = 5.0) -> Any:
    """Real-time wait until ``instance`` has an open gate named ``gate``; returns it."""

    async def poll() -> Any:
        while True:
            for request in await instance.approvals():
                if request.gate == gate:
                    return request
            await asyncio.sleep(0.005)

    try:
        return await asyncio.wait_for(poll(), timeout)
    except TimeoutError:
        raise AssertionError(f"{instance!r} has no open gate {gate!r}: "
                             f"{await instance.approvals()}") from None


async def finished(instance: Any, timeout: float = 10.0) -> af.InstanceDetails:
    details: af.InstanceDetails = await instance.wait(timeout=timeout)
    return details


@pytest.fixture
def seen() -> list[af.Decision]:
    """Every Decision the gated flow saw, in order."""
    return []


async def at_gate(binding: af.WorkflowBinding, id: str, **params: Any) -> af.Instance:
    """Create an instance of the gated flow and wait until it waits at its gate."""
    instance = await binding.create(id=id, params=params or None)
    await wait_for(instance, "waiting")
    return instance
