"""Compiling a validated plan and loading it in this process.

In-process loading is for trusted code and tests: the RestrictedPython policy and guards keep a
plan away from the interpreter's internals, but nothing here bounds its CPU time, memory or
output size beyond ``print`` (an infinite loop blocks the event loop, a huge allocation can
exhaust the process). Untrusted plans run in sandbox processes.
"""

from __future__ import annotations

import ast
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from types import CodeType
from typing import Any

from ._runtime import plan_globals
from .report import PlanRejected, Report
from .validate import DEFAULT_IMPORTS, analyse

Runner = Callable[[Any, Any], Awaitable[Any]]


@dataclass(frozen=True)
class CompiledPlan:
    """A plan that passed validation, compiled with the restricted policy."""

    source: str
    sha256: str
    report: Report
    code: CodeType
    allowed_imports: frozenset[str]

    def load(
        self,
        *,
        tools: Mapping[str, Callable[..., Any]] | None = None,
        print_sink: Callable[[str], None] | None = None,
    ) -> Runner:
        """Execute the module in fresh restricted globals; return its ``run(event, step)``."""
        namespace = plan_globals(
            tools=tools or {}, allowed_imports=self.allowed_imports, print_sink=print_sink
        )
        exec(self.code, namespace)  # restricted bytecode: see the module docstring
        run = namespace["run"]
        runner: Runner = run
        return runner


def compile_plan(
    source: str,
    *,
    tools: Iterable[str] | None = None,
    allowed_imports: Iterable[str] = DEFAULT_IMPORTS,
) -> CompiledPlan:
    """Validate and compile; raises :class:`PlanRejected` (with the report) if not valid."""
    allowed = frozenset(allowed_imports)
    report, restricted = analyse(source, tools=tools, allowed_imports=allowed)
    if restricted is None:
        raise PlanRejected(report)
    ast.fix_missing_locations(restricted)
    code = compile(restricted, filename="<plan>", mode="exec")
    return CompiledPlan(source, report.sha256, report, code, allowed)
