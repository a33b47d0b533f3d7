"""Shared pieces of the planners suite: a real-clock engine on a SQLite file, plan sources in
model replies, tools that record their calls, and a helper that approves gated steps."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

import agentflow as af
from planners import Agent

RUN_TIMEOUT = 20.0  # seconds; every agent run in this suite is far faster


def fenced(source: str, lang: str = "python") -> str:
    """A model reply: the plan in a fenced code block, with some chatter around it."""
    return f"Here is the plan.\n\n```{lang}\n{source.strip()}\n```\n\nIt does what you asked."


@pytest.fixture
async def real_engine(db_url: str) -> AsyncIterator[af.Engine]:
    """An engine on the real clock: plans run for real, with the embedded worker."""
    async with af.Engine.open(db_url, poll_interval=0.05) as engine:
        yield engine


class Calls:
    """Counts and arguments of tool calls, by tool name."""

    def __init__(self) -> None:
        self.log: list[tuple[str, tuple[Any, ...]]] = []

    def hit(self, name: str, *args: Any) -> None:
        self.log.append((name, args))

    def count(self, name: str) -> int:
        return sum(1 for n, _ in self.log if n == name)

    def args(self, name: str) -> list[tuple[Any, ...]]:
        return [a for n, a in self.log if n == name]


@pytest.fixture
def calls() -> Calls:
    return Calls()


def approver(agent: Agent, payload: dict[str, Any] | None = None,
             seen: list[af.InstanceEvent] | None = None,
             ) -> Callable[[af.InstanceEvent], Awaitable[None]]:
    """An ``on_event`` handler that answers every approval wait with ``payload``."""
    answer = {"approved": True, "by": "ada"} if payload is None else payload

    async def on_event(event: af.InstanceEvent) -> None:
        if seen is not None:
            seen.append(event)
        if event.type == "wait.started" and event.data.get("type") == "approval":
            instance = await agent._binding.get(event.instance_id)
            await instance.send_event("approval", answer)

    return on_event


async def bounded(awaitable: Awaitable[Any], timeout: float = RUN_TIMEOUT) -> Any:
    return await asyncio.wait_for(awaitable, timeout)


async def until_status(instance: Any, *statuses: str, timeout: float = 10.0) -> Any:
    """Real-time wait until a (tenant) instance reaches one of ``statuses``."""

    async def poll() -> Any:
        while True:
            details = await instance.status()
            if details.status in statuses:
                return details
            await asyncio.sleep(0.01)

    try:
        return await asyncio.wait_for(poll(), timeout)
    except TimeoutError:
        details = await instance.status()
        raise AssertionError(f"{instance!r} is {details.status} ({details.error}), "
                             f"not {statuses}") from None
