"""Planners: a goal and the granted tools in, a validated plan out, repaired as needed."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import agentflow as af
import sandbox

from . import prompt
from .draft import PlanAttempt, PlanDraft, Provenance
from .gates import check_gates
from .models import ChatModel, Message, Usage, load_model
from .tools import Tool


@dataclass(frozen=True)
class Revision:
    """A plan that ran and failed: the planner writes a new one from it."""

    source: str
    error: str
    journal: tuple[af.StepInfo, ...] = ()


@dataclass(frozen=True)
class PlanRequest:
    goal: str
    tools: Mapping[str, Tool] = field(default_factory=dict)
    context: Mapping[str, Any] | None = None  # what the plan will find in event.payload
    revision: Revision | None = None


@runtime_checkable
class Planner(Protocol):
    """Writes plans. ``plan`` returns a draft whether or not it validated (``draft.ok``);
    it raises only when it cannot plan at all (the model is unreachable)."""

    async def plan(self, request: PlanRequest) -> PlanDraft: ...


def validate_plan(source: str, tools: Mapping[str, Tool],
                  allowed_imports: Iterable[str] = sandbox.DEFAULT_IMPORTS) -> sandbox.Report:
    """The sandbox's verdict plus the planner's own rule: gated tools only after approval."""
    report = sandbox.validate(source, tools=list(tools), allowed_imports=allowed_imports)
    gated = [name for name, tool in tools.items() if tool.needs_approval]
    extra = check_gates(source, gated)
    if not extra:
        return report
    return sandbox.Report(report.source, (*report.diagnostics, *extra))


class LLMPlanner:
    """A planner whose plans an LLM writes.

    The model sees a system prompt generated from the step API and the tools, then the goal
    (and, when revising, the failed plan, its error and its journal). Each draft is
    validated; while it is rejected the diagnostics go back to the model, for at most
    ``max_rounds`` answers in all."""

    def __init__(
        self,
        model: Any = None,
        *,
        max_rounds: int = 4,
        allowed_imports: Iterable[str] = sandbox.DEFAULT_IMPORTS,
        instructions: str | None = None,
    ) -> None:
        if not isinstance(max_rounds, int) or isinstance(max_rounds, bool) or max_rounds < 1:
            raise af.InvalidArgumentError(
                f"max_rounds must be a positive int (answers per plan, the first draft "
                f"included), got {max_rounds!r}"
            )
        self.model: ChatModel = load_model(model)
        self.max_rounds = max_rounds
        self.allowed_imports = frozenset(allowed_imports)
        self.instructions = instructions

    def __repr__(self) -> str:
        return f"LLMPlanner(model={self.model.name!r}, max_rounds={self.max_rounds})"

    def messages(self, request: PlanRequest) -> list[Message]:
        """The conversation that asks for the first draft."""
        system = prompt.system_prompt(request.tools, self.allowed_imports)
        if self.instructions:
            system += f"\n\nMore instructions:\n{self.instructions}"
        user = prompt.goal_message(request.goal, request.context)
        if request.revision is not None:
            revision = request.revision
            user += "\n\n" + prompt.revision_message(revision.source, revision.error,
                                                     revision.journal)
        return [Message("system", system), Message("user", user)]

    async def plan(self, request: PlanRequest) -> PlanDraft:
        _check_request(request)
        conversation = self.messages(request)
        prompt_sha = prompt.prompt_hash(conversation)
        attempts: list[PlanAttempt] = []
        usage: Usage | None = None
        model_name = self.model.name
        for round_ in range(1, self.max_rounds + 1):
            completion = await self.model.complete(conversation)
            model_name = completion.model or model_name
            if completion.usage is not None:
                usage = completion.usage if usage is None else usage + completion.usage
            source = prompt.extract_source(completion.text)
            report = validate_plan(source, request.tools, self.allowed_imports)
            attempts.append(PlanAttempt(round_, source, report))
            if report.ok:
                break
            conversation += [Message("assistant", completion.text),
                             Message("user", prompt.repair_message(report))]
        final = attempts[-1]
        provenance = Provenance(
            model=model_name, prompt_sha256=prompt_sha, rounds=len(attempts),
            verdict="valid" if final.ok else "rejected",
            diagnostics=tuple(str(d) for d in final.report.diagnostics), usage=usage,
            planner=type(self).__name__,
            revision_of=_sha(request.revision.source) if request.revision else None,
        )
        failure = None if final.ok else _failure(final, len(attempts))
        return PlanDraft(final.source, provenance, tuple(attempts), failure)


def _failure(final: PlanAttempt, rounds: int) -> str:
    errors = final.report.errors
    listed = "; ".join(f"line {d.line}: [{d.code}] {d.message}" for d in errors[:3])
    more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
    return (f"the model did not write a valid plan in {rounds} round"
            f"{'s' if rounds != 1 else ''}; the last draft still has {len(errors)} "
            f"problem{'s' if len(errors) != 1 else ''}: {listed}{more}")


def _check_request(request: PlanRequest) -> None:
    if not isinstance(request, PlanRequest):
        raise af.InvalidArgumentError(
            f"plan() takes a PlanRequest, got {type(request).__name__}")
    if not isinstance(request.goal, str) or not request.goal.strip():
        raise af.InvalidArgumentError("the goal must be a non-empty string")


def _sha(source: str) -> str:
    import hashlib

    return hashlib.sha256(source.encode()).hexdigest()


