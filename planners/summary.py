"""What a plan will do, read from its code: its steps in order, the tools each calls, its
approval gates. Shown to the person who approves a plan, next to the source and the diff
against the plan it revises."""

from __future__ import annotations

import ast
import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

_KINDS = {"do": "step", "sleep": "sleep", "sleep_until": "sleep", "wait_for_event": "wait",
          "wait_for_approval": "approval"}


@dataclass(frozen=True)
class StepSummary:
    kind: str  # step, sleep, wait or approval
    name: str  # the literal name, or the expression that computes it
    line: int
    tools: tuple[str, ...] = ()
    gated: bool = False  # calls a tool that needs approval


@dataclass(frozen=True)
class PlanSummary:
    steps: tuple[StepSummary, ...]
    tools: tuple[str, ...]
    gates: tuple[str, ...]
    parallel: bool  # uses step.all

    def as_dict(self) -> dict[str, Any]:
        return {
            "steps": [{"kind": s.kind, "name": s.name, "line": s.line, "tools": list(s.tools),
                       "gated": s.gated} for s in self.steps],
            "tools": list(self.tools), "gates": list(self.gates), "parallel": self.parallel,
        }

    def text(self) -> str:
        lines = []
        for s in self.steps:
            tools = f" -> tools.{', tools.'.join(s.tools)}" if s.tools else ""
            mark = "  [needs approval]" if s.gated else ""
            lines.append(f"line {s.line:>3}  {s.kind:<8} {s.name}{tools}{mark}")
        return "\n".join(lines) or "(no steps)"


def summarize(source: str, gated: Iterable[str] = ()) -> PlanSummary:
    """The steps, tools and gates of ``source`` (a plan that parses; else an empty summary)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return PlanSummary((), (), (), False)
    gated_names = set(gated)
    functions = {n.name: n for n in ast.walk(tree)
                 if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    steps: list[StepSummary] = []
    parallel = False
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name) and node.func.value.id == "step"):
            continue
        method = node.func.attr
        parallel |= method == "all"
        if method not in _KINDS:
            continue
        body = _argument(node, 1, "fn") if method == "do" else None
        tools = _tools_in(body, functions) if body is not None else ()
        steps.append(StepSummary(_KINDS[method], _name(node), node.lineno, tools,
                                 bool(set(tools) & gated_names)))
    steps.sort(key=lambda s: s.line)
    used = tuple(dict.fromkeys(t for s in steps for t in s.tools))
    gates = tuple(s.name for s in steps if s.kind == "approval")
    return PlanSummary(tuple(steps), used, gates, parallel)


def plan_diff(previous: str, current: str) -> str:
    """A unified diff from the plan a revision replaces to the revision."""
    return "".join(difflib.unified_diff(
        previous.splitlines(keepends=True), current.splitlines(keepends=True),
        "previous plan", "revised plan",
    ))


def _argument(call: ast.Call, position: int, keyword: str) -> ast.expr | None:
    if len(call.args) > position:
        return call.args[position]
    return next((k.value for k in call.keywords if k.arg == keyword), None)


def _name(call: ast.Call) -> str:
    name = _argument(call, 0, "name")
    if isinstance(name, ast.Constant) and isinstance(name.value, str):
        return name.value
    return ast.unparse(name) if name is not None else "?"


def _tools_in(body: ast.expr, functions: Mapping[str, ast.AST]) -> tuple[str, ...]:
    """Tools a step body calls: in the expression and in every plan function it reaches
    (named as the body, or called from it, at any depth)."""
    found: list[str] = []
    seen: set[str] = set()
    pending: list[ast.AST] = [body]
    while pending:
        node = pending.pop()
        if isinstance(node, ast.Name) and node.id in functions and node.id not in seen:
            seen.add(node.id)
            pending.append(functions[node.id])
            continue
        for inner in ast.walk(node):
            if isinstance(inner, ast.Call) and isinstance(inner.func, ast.Attribute) and (
                    isinstance(inner.func.value, ast.Name) and inner.func.value.id == "tools"):
                found.append(inner.func.attr)
            elif (isinstance(inner, ast.Name) and inner.id in functions
                  and inner.id not in seen and inner is not node):
                pending.append(inner)
    return tuple(dict.fromkeys(found))
