"""Reusing finished steps across plan revisions, and the step the agent's plans see.

When a revised plan runs, a ``step.do`` whose name, occurrence and inputs fingerprint (see
``sandbox.inputs_fingerprint``) match a step the failed run finished returns that result
without running its body. The failed run's fingerprints are not stored anywhere: they are
recomputed by replaying its plan over its journal (a *dry replay*: journaled results only, no
step body runs, tools refuse), which is exactly what a replay would do.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import agentflow as af
import sandbox
from agentflow.approvals import decision

from . import gates

REUSED_PREFIX = "reused step "

Key = tuple[str, int]


@dataclass(frozen=True, slots=True)
class Seed:
    """A finished step of an earlier run: its inputs fingerprint and its result."""

    fingerprint: str
    result: Any


def fingerprint_of(fn: Callable[..., Any]) -> str | None:
    """The inputs fingerprint of a step body: sent by the sandbox process, or computed here
    for a plan running in this process."""
    if hasattr(fn, "inputs_fingerprint"):
        value = fn.inputs_fingerprint
        return value if isinstance(value, str) else None
    return sandbox.inputs_fingerprint(fn)


class _Counter:
    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def next(self, name: Any) -> int:
        key = str(name)
        self.counts[key] = self.counts.get(key, 0) + 1
        return self.counts[key]


class AgentStep:
    """The ``step`` an agent's plan gets: the engine's step, plus reuse of an earlier run's
    finished steps and the approval bookkeeping for gated tools."""

    def __init__(self, step: Any, seeds: Mapping[Key, Seed] | None = None, *,
                 scope_bodies: bool = True) -> None:
        self._step = step
        self._seeds = dict(seeds or {})
        # Bodies run in sandbox.step_scope only where a gated tool may read it: plans in this
        # process (a sandbox process tags its tool calls itself).
        self._scope_bodies = scope_bodies
        self._counter = _Counter()
        self.wants_inputs = bool(self._seeds)  # ask the sandbox for fingerprints
        journaled = getattr(step, "journaled", None)
        if callable(journaled):
            # Seeded steps count as journaled: the sandbox process must ask before it runs
            # their bodies, so a reused step's body never runs.
            self.journaled = lambda: [*journaled(), *self._seeds]

    async def do(self, name: str, fn: Callable[..., Any], **options: Any) -> Any:
        count = self._counter.next(name)
        seed = self._seeds.get((name, count)) if isinstance(name, str) else None
        if seed is not None and fingerprint_of(fn) == seed.fingerprint:
            result = seed.result
            self.log(f"{REUSED_PREFIX}{name!r} #{count}: same name and inputs as in the "
                     "failed run")
            return await self._step.do(name, lambda: result, **options)
        if self._scope_bodies:
            fn = _in_scope(fn, (str(name), count))
        return await self._step.do(name, fn, **options)

    async def sleep(self, name: str, duration: Any) -> None:
        self._counter.next(name)
        await self._step.sleep(name, duration)

    async def sleep_until(self, name: str, when: Any) -> None:
        self._counter.next(name)
        await self._step.sleep_until(name, when)

    async def wait_for_event(self, name: str, *, type: str, timeout: Any = "24 hours") -> Any:
        self._counter.next(name)
        event = await self._step.wait_for_event(name, type=type, timeout=timeout)
        gates.note_event(event.type, event.payload)
        return event

    async def wait_for_approval(self, name: str, **options: Any) -> Any:
        self._counter.next(name)
        decision = await self._step.wait_for_approval(name, **options)
        gates.note_decision(decision.approved)
        return decision

    async def all(self, *awaitables: Awaitable[Any]) -> list[Any]:
        return list(await self._step.all(*awaitables))

    def log(self, text: str) -> None:
        log = getattr(self._step, "log", None)
        if callable(log):
            log(text)


def _in_scope(fn: Callable[..., Any], key: tuple[str, int]) -> Callable[..., Any]:
    """``fn`` run inside ``sandbox.step_scope(key)``, so the tools a plan running in this
    process calls know their step (a sandbox process tags its tool calls itself). Sync stays
    sync and a body that takes the step context still gets it."""
    if not callable(fn):
        return fn  # the engine reports it

    def call(*args: Any) -> Any:
        with sandbox.step_scope(key):
            result = fn(*args)
        if inspect.isawaitable(result):
            return _scoped(result, key)
        return result

    body: Callable[..., Any]
    if _takes_context(fn):
        def body_with_context(context: Any) -> Any:
            return call(context)
        body = body_with_context
    else:
        def body_plain() -> Any:
            return call()
        body = body_plain
    if hasattr(fn, "inputs_fingerprint"):
        setattr(body, "inputs_fingerprint", fn.inputs_fingerprint)  # noqa: B010
    return body


async def _scoped(awaitable: Awaitable[Any], key: tuple[str, int]) -> Any:
    with sandbox.step_scope(key):
        return await awaitable


def _takes_context(fn: Callable[..., Any]) -> bool:
    """Whether the engine passes a StepContext to ``fn`` (a required positional argument)."""
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
               for p in parameters)


class _EndOfJournal(BaseException):
    """The dry replay reached a step the run did not finish."""


class DryStep:
    """Replays a plan over a finished run's journal and notes each finished step body's
    fingerprint. Never runs a body; stops at the first step the journal does not hold as
    completed."""

    wants_inputs = True  # the sandbox sends fingerprints; `journaled` is absent on purpose,
    # so the sandbox process never runs a body before asking

    def __init__(self, journal: list[af.StepInfo]) -> None:
        self._journal = {(s.name, s.count): s for s in journal}
        self._counter = _Counter()
        self.seeds: dict[Key, Seed] = {}

    def _finished(self, name: Any, kind: str) -> af.StepInfo:
        info = self._journal.get((str(name), self._counter.next(name)))
        if info is None or info.kind != kind or info.state != "completed":
            raise _EndOfJournal
        return info

    async def do(self, name: str, fn: Callable[..., Any], **options: Any) -> Any:
        info = self._finished(name, "do")
        fingerprint = fingerprint_of(fn)
        if fingerprint is not None:
            self.seeds[(info.name, info.count)] = Seed(fingerprint, info.result)
        return info.result

    async def sleep(self, name: str, duration: Any) -> None:
        self._finished(name, "sleep")

    async def sleep_until(self, name: str, when: Any) -> None:
        self._finished(name, "sleep")

    async def wait_for_event(self, name: str, *, type: str, timeout: Any = "24 hours") -> Any:
        return _event(self._finished(name, "wait"), type)

    async def wait_for_approval(self, name: str, **options: Any) -> Any:
        event = _event(self._finished(name, "wait"), "approval")
        return decision(event, {"data": options.get("data")})

    async def all(self, *awaitables: Awaitable[Any]) -> list[Any]:
        return list(await asyncio.gather(*awaitables))

    def log(self, text: str) -> None:
        pass


def _event(info: af.StepInfo, type: str) -> af.StepEvent:
    """The event a completed wait took, as its journal entry holds it."""
    result = info.result or {}
    stamp = result.get("timestamp")
    when = (datetime.fromtimestamp(stamp, UTC) if isinstance(stamp, (int, float))
            else datetime.now(UTC))
    return af.StepEvent(str(result.get("type", type)), result.get("payload"), when)


async def finished_steps(runner: Callable[[Any, Any], Awaitable[Any]], event: af.Event,
                         journal: list[af.StepInfo]) -> dict[Key, Seed]:
    """The reusable steps of a run: dry-replay its plan (``runner``, loaded with tools that
    refuse) over its ``journal``."""
    dry = DryStep(journal)
    # The run failed somewhere after its last finished step: ending there is expected.
    with contextlib.suppress(Exception, _EndOfJournal):
        await runner(event, dry)
    return dry.seeds


def refusing_tools(names: list[str]) -> dict[str, Callable[..., Any]]:
    """Tools for a dry replay: a body never runs there, so a call is a bug worth an error."""

    def refuse(name: str) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError(f"tool {name!r} called during a dry replay")
        return call

    return {name: refuse(name) for name in names}
