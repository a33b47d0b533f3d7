"""Loading tenants' code: from the registry, through the sandbox, cached by (tenant, sha)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any, Literal

import sandbox
from sandbox.process import SandboxPool

from ..engine import Engine
from ..workflow import Runner
from .envelope import CodeRef
from .registry import CodeRegistry
from .request import DispatchRequest

Tools = Mapping[str, Callable[..., Any]]


class Loader:
    """A ``load_runner`` for ``create_dynamic_workflow_entrypoint``.

    Runners are cached by (tenant, sha256), at most ``capacity`` of them (least recently used
    first out). Evicting a runner never breaks an instance: a run keeps the runner it started
    with, and its next run loads the code again. Each tenant's plans get only
    ``tools_for(tenant_id)``. ``mode`` 'process' runs plans in ``pool``'s sandbox processes;
    'in-process' runs them in this process (trusted code and tests: no CPU or memory limits).
    """

    def __init__(
        self,
        engine: Engine,
        *,
        tools_for: Callable[[str], Tools] | None = None,
        mode: Literal["process", "in-process"] = "process",
        pool: SandboxPool | None = None,
        capacity: int = 1024,
    ) -> None:
        if mode == "process" and pool is None:
            raise ValueError("mode='process' needs a started SandboxPool (pool=...)")
        self.registry = CodeRegistry(engine)
        self._tools_for = tools_for or (lambda tenant: {})
        self._mode = mode
        self._pool = pool
        self.capacity = capacity
        self._cache: OrderedDict[tuple[str, str], Runner] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._cache)

    def lookup(self, tenant_id: str, sha256: str) -> Runner | None:
        """The cached runner of this code version, or None (a hit counts as one)."""
        key = (tenant_id, sha256)
        runner = self._cache.get(key)
        if runner is not None:
            self._cache.move_to_end(key)
            self.hits += 1
        return runner

    async def __call__(self, request: DispatchRequest) -> Runner:
        key = (request.tenant_id, request.code.sha256)
        runner = self.lookup(*key)
        if runner is not None:
            return runner
        self.misses += 1
        runner = await self._load(request.code)
        self._cache[key] = runner
        if len(self._cache) > self.capacity:
            self._cache.popitem(last=False)
        return runner

    async def _load(self, ref: CodeRef) -> Runner:
        source = await self.registry.source(ref)
        tools = dict(self._tools_for(ref.tenant_id))
        if self._mode == "process":
            assert self._pool is not None
            return self._pool.runner(source, tools=tools)
        # Validated again against this tenant's tools: a plan naming a tool the tenant lacks
        # fails at load with the report, not at its first step.
        return sandbox.compile_plan(source, tools=tools).runner(tools=tools)
