"""Running plans in sandbox processes, the way an isolate runs tenant code.

A :class:`SandboxPool` keeps warm processes (``python -I -m sandbox._child``), each limited in
memory and forbidden to grow files, each running one plan run at a time. The host side of a run
is an ordinary ``async def run(event, step)``: every step call and tool call of the plan arrives
as a message, the host performs it with the real ``step`` (which keeps the journal, retries and
timeouts) or the real tool, and answers with plain data. A watchdog reads the process's CPU time;
a run over its CPU budget, or a process that dies, fails that run alone and the process is
replaced.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from ._host_errors import (
    PlanFailed,
    SandboxCrashed,
    SandboxError,
    SandboxLimitError,
    plan_error,
)
from ._host_pipes import Process, start_child
from ._session import Limits, _Session
from .plan import check_plan
from .validate import DEFAULT_IMPORTS

__all__ = [
    "Limits", "PlanFailed", "SandboxCrashed", "SandboxError", "SandboxLimitError",
    "SandboxPool", "plan_error",
]

Runner = Callable[[Any, Any], Awaitable[Any]]


class SandboxPool:
    """Warm sandbox processes; ``runner(source, tools=...)`` gives workflow code for a plan."""

    def __init__(self, *, size: int = 2, max_size: int = 8, limits: Limits | None = None) -> None:
        self.size = size
        self.max_size = max(size, max_size)
        self.limits = limits or Limits()
        self._idle: list[Process] = []
        self._count = 0
        self._freed = asyncio.Condition()
        self._closed = False

    async def start(self) -> SandboxPool:
        procs = await asyncio.gather(*(self._spawn() for _ in range(self.size)))
        self._idle.extend(procs)
        return self

    async def __aenter__(self) -> SandboxPool:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        self._closed = True
        for process in self._idle:
            process.kill()
            await process.proc.wait()
        self._idle.clear()

    async def _spawn(self) -> Process:
        self._count += 1
        workdir = tempfile.mkdtemp(prefix="agentflow-sandbox-")
        process: Process | None = None
        try:
            process = Process(*await start_child(workdir), workdir)
            await process.send({"op": "hello", "memory_bytes": self.limits.memory_bytes,
                                "workdir": workdir})
            ready = await process.receive()
            if ready.get("op") != "ready":
                raise SandboxCrashed(f"sandbox process did not start: {ready}")
        except BaseException:
            self._count -= 1  # the slot it took is free again
            if process is not None:
                process.kill()  # (removes the workdir too)
            else:
                shutil.rmtree(workdir, ignore_errors=True)
            raise
        return process

    async def _acquire(self, sha: str) -> Process:
        async with self._freed:
            while True:
                for process in [p for p in self._idle if p.proc.returncode is not None]:
                    self._idle.remove(process)  # died while idle: never hand it out
                    process.kill()
                    self._count -= 1
                for process in self._idle:
                    if process.plan_sha == sha:
                        self._idle.remove(process)
                        return process
                if self._idle:
                    return self._idle.pop(0)
                if self._count < self.max_size:
                    break
                await self._freed.wait()
        return await self._spawn()

    async def _release(self, process: Process, healthy: bool) -> None:
        if not healthy or self._closed:
            process.kill()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(process.proc.wait(), 5)  # reap it
            self._count -= 1
            if not self._closed and self._count < self.size:
                with contextlib.suppress(Exception):
                    replacement = await self._spawn()
                    async with self._freed:
                        self._idle.append(replacement)
                        self._freed.notify()
            return
        async with self._freed:
            self._idle.append(process)
            self._freed.notify()

    def runner(
        self,
        source: str,
        *,
        tools: Mapping[str, Callable[..., Any]] | None = None,
        print_sink: Callable[[str], None] | None = None,
        allowed_imports: frozenset[str] = DEFAULT_IMPORTS,
    ) -> Runner:
        """Workflow code (``async def run(event, step)``) that runs ``source`` sandboxed.
        The plan is validated here; :class:`PlanRejected` says why if it is not valid."""
        granted = dict(tools or {})
        # The child compiles the plan; the host only needs to know that it is valid.
        plan = check_plan(source, tools=granted, allowed_imports=allowed_imports)

        async def run(event: Any, step: Any) -> Any:
            process = await self._acquire(plan.sha256)
            session: _Session | None = None
            try:
                if process.plan_sha != plan.sha256:
                    await _load(process, source, granted, allowed_imports)
                    process.plan_sha = plan.sha256
                session = _Session(process, step, granted, print_sink, self.limits)
                return await session.run(event)
            finally:
                # Reused after a finished run, and after a suspended one whose child
                # acknowledged the cancel; replaced otherwise.
                await self._release(process, session is not None and session.reusable)

        return run


async def _load(process: Process, source: str, tools: Mapping[str, Any],
                allowed_imports: frozenset[str]) -> None:
    await process.send({"op": "load", "source": source, "tools": sorted(tools),
                        "allowed_imports": sorted(allowed_imports)})
    reply = await process.receive()
    while reply.get("op") not in ("loaded", "load_failed"):  # skip what an old run left
        reply = await process.receive()
    if reply.get("op") != "loaded":
        raise SandboxCrashed(f"the sandbox could not load the plan: {reply.get('error')}")
