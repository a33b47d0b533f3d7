"""The agent loop: plan, register, run durably, and re-plan from the journal when a run fails.

    async with Agent(engine, LLMPlanner("openai:gpt-4.1-mini"), [checkout, deploy],
                     tenant_id="acme", needs_approval=["deploy"]) as agent:
        result = await agent.run("release version 1.4.0", params={"version": "1.4.0"})
"""

from __future__ import annotations

import inspect
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import agentflow as af
from agentflow.dispatch import CodeRef, TenantInstance
from sandbox.process import SandboxPool

from ._runtime import Mode, runtime_for
from .draft import PlanDraft, Provenance
from .errors import PlanningFailed
from .planner import Planner, PlanRequest, Revision
from .reuse import REUSED_PREFIX
from .summary import plan_diff, summarize
from .tools import Tool, to_tools

_MAX_SHOWN = 24 * 1024  # source and diff shown in the approval request, at most
FINISHED = frozenset({af.InstanceStatus.COMPLETE, af.InstanceStatus.ERRORED,
                      af.InstanceStatus.TERMINATED})
EventHandler = Callable[[af.InstanceEvent], Awaitable[None] | None]
PlanHandler = Callable[[PlanDraft], Awaitable[None] | None]


@dataclass(frozen=True)
class PlanRecord:
    """The plan an instance runs: its pinned code, its source and where it came from."""

    code: CodeRef
    source: str
    provenance: Provenance | None


@dataclass(frozen=True)
class AgentAttempt:
    """One instance the agent ran for a goal: the first plan, or a revision."""

    instance_id: str
    code: CodeRef
    provenance: Provenance | None
    status: af.InstanceStatus
    error: af.ErrorInfo | None
    reused_steps: int


@dataclass(frozen=True)
class AgentResult:
    goal: str
    instance: TenantInstance
    status: af.InstanceStatus
    output: Any
    error: af.ErrorInfo | None
    attempts: tuple[AgentAttempt, ...]
    planning_failure: str | None = None  # a revision the model could not write

    @property
    def ok(self) -> bool:
        return self.status == af.InstanceStatus.COMPLETE

    @property
    def revisions(self) -> int:
        return len(self.attempts) - 1

    @property
    def reused_steps(self) -> int:
        """Steps that revised plans took from earlier runs instead of running again."""
        return sum(a.reused_steps for a in self.attempts)

    @property
    def rounds(self) -> int:
        """Model answers across every plan of this run (as far as this process saw them)."""
        return sum(a.provenance.rounds for a in self.attempts if a.provenance)


class Agent:
    """Runs goals as LLM-written plans on ``engine``, for one tenant.

    ``tools`` are the capabilities its plans get (functions, LangChain tools or
    :class:`planners.Tool`); ``needs_approval`` names the ones a person must approve first.
    Plans run in sandbox processes (``sandbox="process"``, the default) or, for trusted
    setups and tests, in this process. When a run fails the agent asks the planner for a
    revision, at most ``max_revisions`` times; a revision reuses the finished steps whose
    name and inputs did not change. With ``approve_plans`` every plan waits, before its first
    step, for a person to approve it as a whole (gate ``agentflow: approve plan``: its summary,
    source and the diff against the plan it revises); a rejection's comment goes to the
    planner with the revision request."""

    def __init__(
        self,
        engine: af.Engine,
        planner: Planner,
        tools: Iterable[Any] | Mapping[str, Any] | None = None,
        *,
        tenant_id: str = "default",
        needs_approval: Iterable[str] = (),
        max_revisions: int = 2,
        approve_plans: bool = False,
        plan_approval_timeout: Any = "24 hours",
        sandbox: Mode = "process",
        pool: SandboxPool | None = None,
        workflow: str = "agent",
    ) -> None:
        if not isinstance(engine, af.Engine):
            raise af.InvalidArgumentError(f"Agent needs an agentflow Engine, got "
                                          f"{type(engine).__name__}")
        if not callable(getattr(planner, "plan", None)):
            raise af.InvalidArgumentError("planner must have an async plan(request) method, "
                                          "e.g. planners.LLMPlanner(model)")
        if not isinstance(max_revisions, int) or isinstance(max_revisions, bool) or (
                max_revisions < 0):
            raise af.InvalidArgumentError(f"max_revisions must be an int >= 0, got "
                                          f"{max_revisions!r}")
        if sandbox not in ("process", "in-process"):
            raise af.InvalidArgumentError(
                f"sandbox must be 'process' or 'in-process', got {sandbox!r}")
        self.engine = engine
        self.planner = planner
        self.tools: dict[str, Tool] = to_tools(tools, needs_approval)
        self.tenant_id = tenant_id
        self.max_revisions = max_revisions
        self.approve_plans = bool(approve_plans)
        self.plan_approval_timeout = plan_approval_timeout
        runtime = runtime_for(engine, workflow, sandbox, pool)
        self._binding = runtime.binding(tenant_id)  # validates tenant_id
        runtime.grant(tenant_id, self.tools)  # checked last: nothing to undo when it fails
        runtime.users += 1
        self._runtime = runtime
        self._closed = False

    async def __aenter__(self) -> Agent:
        await self._runtime.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop the sandbox processes this agent's runtime started (when it is the last
        agent using them)."""
        if self._closed:
            return
        self._closed = True
        self._runtime.users -= 1
        if self._runtime.users == 0:
            await self._runtime.close()

    # -- planning ---------------------------------------------------------------------------
    async def plan(self, goal: str, *, params: Mapping[str, Any] | None = None,
                   revision: Revision | None = None) -> PlanDraft:
        """A validated plan for ``goal``; :class:`PlanningFailed` if the model could not
        write one."""
        request = PlanRequest(goal, self.tools, _payload(goal, params), revision)
        draft = await self.planner.plan(request)
        if not draft.ok:
            raise PlanningFailed(draft)
        return draft

    async def start(self, goal: str, *, params: Mapping[str, Any] | None = None,
                    id: str | None = None, on_plan: PlanHandler | None = None,
                    ) -> TenantInstance:
        """Plan and start; returns the running instance without waiting for it."""
        draft = await self.plan(goal, params=params)
        await _call(on_plan, draft)
        return await self._launch(goal, params, draft, id or uuid.uuid4().hex[:16], None)

    async def run(self, goal: str, *, params: Mapping[str, Any] | None = None,
                  id: str | None = None, on_event: EventHandler | None = None,
                  on_plan: PlanHandler | None = None) -> AgentResult:
        """Plan, run and follow until the plan finishes; re-plan when it fails.

        With ``id`` the run is resumable: calling ``run`` again with the same id (after a
        crash or Ctrl-C) follows the instance already there instead of starting over."""
        base_id = id or uuid.uuid4().hex[:16]
        attempts: list[AgentAttempt] = []
        instances = await self._existing(base_id)
        if instances:
            for earlier in instances[:-1]:
                attempts.append(await self._attempt(earlier))
            instance = instances[-1]
        else:
            draft = await self.plan(goal, params=params)
            await _call(on_plan, draft)
            instance = await self._launch(goal, params, draft, base_id, None)
        while True:
            await self._follow(instance, on_event)
            attempt = await self._attempt(instance)
            attempts.append(attempt)
            if attempt.status != af.InstanceStatus.ERRORED or (
                    len(attempts) > self.max_revisions):
                return await self._result(goal, instance, attempts)
            revision = await self._revision(instance, attempt)
            try:
                draft = await self.plan(goal, params=params, revision=revision)
            except PlanningFailed as failed:
                return await self._result(goal, instance, attempts, failed.draft.failure)
            await _call(on_plan, draft)
            instance = await self._launch(goal, params, draft,
                                          f"{base_id}-r{len(attempts)}", instance.id,
                                          previous=revision.source)

    async def get(self, id: str) -> TenantInstance:
        """An instance of this agent's tenant by id."""
        return await self._binding.get(id)

    async def plan_of(self, instance: TenantInstance | str) -> PlanRecord:
        """The plan an instance of this agent runs, with its provenance."""
        if isinstance(instance, str):
            instance = await self._binding.get(instance)
        code = await instance.code()
        meta = (await instance.metadata()).get("agent") or {}
        provenance = meta.get("provenance")
        return PlanRecord(code, await self._runtime.loader.registry.source(code),
                          Provenance.from_dict(provenance) if provenance else None)

    # -- internals --------------------------------------------------------------------------
    async def _launch(self, goal: str, params: Mapping[str, Any] | None, draft: PlanDraft,
                      id: str, reuse_from: str | None, *, previous: str | None = None,
                      ) -> TenantInstance:
        await self._runtime.start()
        ref = await self._runtime.loader.registry.register(
            self.tenant_id, self._runtime.workflow, draft.source, tools=list(self.tools))
        meta: dict[str, Any] = {
            "goal": goal, "provenance": draft.provenance.as_dict(), "reuse_from": reuse_from,
        }
        if self.approve_plans:
            meta["approve_plan"] = self._plan_gate(goal, draft, previous)
        binding = self._runtime.binding(self.tenant_id, agent=meta)
        return await binding.create(id, _payload(goal, params), code=ref)

    def _plan_gate(self, goal: str, draft: PlanDraft, previous: str | None) -> dict[str, Any]:
        gated = [name for name, tool in self.tools.items() if tool.needs_approval]
        summary = summarize(draft.source, gated)
        data: dict[str, Any] = {
            "summary": summary.as_dict(), "summary_text": summary.text(),
            "source": draft.source[:_MAX_SHOWN], "sha256": draft.sha256,
            "diff": plan_diff(previous, draft.source)[:_MAX_SHOWN] if previous else None,
            "model": draft.provenance.model, "rounds": draft.rounds,
        }
        what = "a revised plan" if previous else "the plan"
        return {"prompt": f"Run {what} for: {goal}", "data": data,
                "timeout": self.plan_approval_timeout}

    async def _existing(self, base_id: str) -> list[TenantInstance]:
        found: list[TenantInstance] = []
        candidates = [base_id, *(f"{base_id}-r{k}" for k in range(1, self.max_revisions + 1))]
        for candidate in candidates:
            try:
                found.append(await self._binding.get(candidate))
            except af.InstanceNotFoundError:
                break
        if found:
            await self._runtime.start()
        return found

    async def _follow(self, instance: TenantInstance, on_event: EventHandler | None) -> None:
        async for event in instance.events():
            await _call(on_event, event)
        while (await instance.status()).status not in FINISHED:  # events() ended early
            await instance.wait()

    async def _attempt(self, instance: TenantInstance) -> AgentAttempt:
        details = await instance.status()
        record = await self.plan_of(instance)
        reused = 0
        async for event in instance.events(follow=False):
            if event.type == "instance.log" and str(event.data.get("text", "")).startswith(
                    REUSED_PREFIX):
                reused += 1
        return AgentAttempt(instance.id, record.code, record.provenance, details.status,
                            details.error, reused)

    async def _revision(self, instance: TenantInstance, attempt: AgentAttempt) -> Revision:
        record = await self.plan_of(instance)
        error = attempt.error
        text = f"{error.name}: {error.message}" if error else "the run failed"
        return Revision(record.source, text, tuple(await instance.steps()))

    async def _result(self, goal: str, instance: TenantInstance,
                      attempts: list[AgentAttempt],
                      planning_failure: str | None = None) -> AgentResult:
        details = await instance.status()
        return AgentResult(goal, instance, details.status, details.output, details.error,
                           tuple(attempts), planning_failure)


def _payload(goal: str, params: Mapping[str, Any] | None) -> dict[str, Any]:
    if not isinstance(goal, str) or not goal.strip():
        raise af.InvalidArgumentError("the goal must be a non-empty string")
    params = dict(params or {})
    if "goal" in params:
        raise af.InvalidArgumentError("params must not have a 'goal' key: the agent puts the "
                                      "goal there (event.payload['goal'])")
    return {"goal": goal, **params}


async def _call(handler: Callable[[Any], Awaitable[None] | None] | None, value: Any) -> None:
    if handler is None:
        return
    result = handler(value)
    if inspect.isawaitable(result):
        await result
