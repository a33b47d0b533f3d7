"""Approval gates for tools that need a person's consent.

A plan asks with ``step.wait_for_approval(name, prompt=..., data=...)`` (a person decides from
the inbox, the CLI or the notebook), or with ``step.wait_for_event(name, type="approval")``
answered by an event whose payload has ``"approved": true``. Two guards hold the rule:

- before a plan is accepted, :func:`check_gates` finds calls of gated tools that no approval
  wait precedes, and the planner sends the plan back with that finding;
- while it runs, gated tools refuse to act unless the run has been granted an approval since
  their last use (:func:`guard`), whatever the plan's code does.
"""

from __future__ import annotations

import ast
import inspect
import json
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from typing import Any

import agentflow as af
import sandbox

from .prompt import APPROVAL_EVENT


class ApprovalRequiredError(af.NonRetryableError):
    """A gated tool was called without a person's approval in this run."""


class _Grants:
    """Approvals granted in one run, and the step occurrences that used them: one approval
    admits every gated call of one step occurrence (its retries included), no more."""

    __slots__ = ("count", "used")

    def __init__(self) -> None:
        self.count = 0
        self.used: set[object] = set()

    def admit(self, caller: object) -> bool:
        if caller in self.used:
            return True
        if len(self.used) < self.count:
            self.used.add(caller)
            return True
        return False


_GRANTS: ContextVar[_Grants | None] = ContextVar("agentflow_approval_grants", default=None)


def begin_run() -> object:
    """Start counting approvals for the run in this context; returns the reset token."""
    return _GRANTS.set(_Grants())


def end_run(token: object) -> None:
    _GRANTS.reset(token)  # type: ignore[arg-type]


def note_event(event_type: str, payload: Any) -> None:
    """Record an approval the run received (live or replayed from the journal)."""
    grants = _GRANTS.get()
    if grants is not None and event_type == APPROVAL_EVENT and isinstance(payload, dict) and (
            payload.get("approved") is True):
        grants.count += 1


def note_decision(approved: bool) -> None:
    """Record a decision of ``step.wait_for_approval`` (live or replayed)."""
    grants = _GRANTS.get()
    if grants is not None and approved is True:
        grants.count += 1


def guard(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` that runs only when the current run holds an approval for the step calling it:
    one approval per step occurrence that calls gated tools (retries need no new one)."""

    async def gated(*args: Any, **kwargs: Any) -> Any:
        grants = _GRANTS.get()
        # The step occurrence making the call; a call from no known step is its own caller.
        caller = sandbox.calling_step() or ("call", name, json.dumps(
            [args, kwargs], sort_keys=True, default=repr))
        if grants is None or not grants.admit(caller):
            raise ApprovalRequiredError(
                f"tool {name!r} needs a person's approval: ask with step.wait_for_approval"
                "(...) and call it only when the decision is approved (one approval per "
                "step that calls gated tools)"
            )
        result = fn(*args, **kwargs)
        return await result if inspect.isawaitable(result) else result

    gated.__name__ = name
    return gated


def check_gates(source: str, gated: Iterable[str]) -> list[sandbox.Diagnostic]:
    """Calls of gated tools with no approval wait before them in the plan's text."""
    names = set(gated)
    if not names:
        return []
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []  # the validator reports it
    approvals: list[int] = []
    uses: list[tuple[int, int, str]] = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        target = node.func.value
        if node.func.attr in ("wait_for_event", "wait_for_approval") and _asks_approval(node):
            approvals.append(node.lineno)
        elif isinstance(target, ast.Name) and target.id == "tools" and node.func.attr in names:
            uses.append((node.lineno, node.col_offset, node.func.attr))
    return [
        sandbox.Diagnostic(
            code="approval-missing", line=line, column=column,
            message=f"tools.{tool} needs a person's approval, but no approval is asked for "
                    "before this call",
            hint=f'ask first: decision = await step.wait_for_approval("approve {tool}", '
                 'prompt="<what will happen>", data={<the arguments>}), and call '
                 f'tools.{tool} only if decision.approved',
        )
        for line, column, tool in sorted(uses)
        if not any(asked < line for asked in approvals)
    ]


def _asks_approval(call: ast.Call) -> bool:
    assert isinstance(call.func, ast.Attribute)
    if call.func.attr == "wait_for_approval":
        return True
    return any(k.arg == "type" and isinstance(k.value, ast.Constant)
               and k.value.value == APPROVAL_EVENT for k in call.keywords)
