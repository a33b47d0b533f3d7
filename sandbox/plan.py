"""Compiling a validated plan and loading it in this process.

In-process loading is for trusted code and tests: the RestrictedPython policy and guards keep a
plan away from the interpreter's internals, but nothing here bounds its CPU time, memory or
output size beyond ``print`` (an infinite loop blocks the event loop, a huge allocation can
exhaust the process). Untrusted plans run in sandbox processes.
"""

from __future__ import annotations

import ast
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from types import CodeType
from typing import Any

from . import _collector
from ._runtime import MAX_PRINT_BYTES, PrintLog, Tools, globals_template, plan_globals
from .report import PlanRejected, Report
from .validate import DEFAULT_IMPORTS, analyse, analysed

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
        print_limit: int | None = MAX_PRINT_BYTES,
    ) -> Runner:
        """Execute the module in fresh restricted globals; return its ``run(event, step)``.
        ``print`` output goes to ``print_sink``, at most ``print_limit`` bytes in all."""
        return _module_run(self.code, plan_globals(
            tools=tools or {}, allowed_imports=self.allowed_imports, print_sink=print_sink,
            print_limit=print_limit,
        ))

    def runner(
        self,
        *,
        tools: Mapping[str, Callable[..., Any]] | None = None,
        print_sink: Callable[[str], None] | None = None,
    ) -> Runner:
        """Workflow code running this plan in process. ``print`` goes to the instance's log
        (``step.log``, when the step has one) and to ``print_sink``, bounded per run."""

        # What every run's globals start from, built once per runner (tools hold no state).
        template = globals_template(Tools(tools or {}), self.allowed_imports)
        code = self.code

        async def run_in_process(event: Any, step: Any) -> Any:
            # Fresh module globals for every run: nothing one run (or tenant) leaves in them
            # reaches the next, and each run's print budget is its own.
            namespace = template.copy()
            namespace["_print_"] = PrintLog(_run_output(getattr(step, "log", None), print_sink))
            return await _module_run(code, namespace)(event, step)

        return run_in_process


def _module_run(code: CodeType, namespace: dict[str, Any]) -> Runner:
    """Execute the plan's module in ``namespace``; its ``run``."""
    exec(code, namespace)  # restricted bytecode: see the module docstring
    run: Runner = namespace["run"]
    return run


def _run_output(log: Any, sink: Callable[[str], None] | None) -> Callable[[str], None] | None:
    """Where one run's ``print`` goes: the instance's log (when the step has one) and the
    runner's sink."""
    if not callable(log):
        return sink
    if sink is None:
        return log  # type: ignore[no-any-return]
    return _RunOutput(log, sink).write


class _RunOutput:
    """Where one run's ``print`` goes: the instance's log and the runner's sink."""

    __slots__ = ("_log", "_sink")

    def __init__(self, log: Callable[[str], None], sink: Callable[[str], None]) -> None:
        self._log = log
        self._sink = sink

    def write(self, text: str) -> None:
        self._log(text)
        self._sink(text)


def compile_plan(
    source: str,
    *,
    tools: Iterable[str] | None = None,
    allowed_imports: Iterable[str] = DEFAULT_IMPORTS,
) -> CompiledPlan:
    """Validate and compile; raises :class:`PlanRejected` (with the report) if not valid.
    Compiled plans are cached by their text, tools and imports (plans are immutable and
    content-addressed): compiling a plan again costs a dictionary lookup."""
    allowed = frozenset(allowed_imports)
    granted = None if tools is None else frozenset(tools)
    key = (source, granted, allowed) if isinstance(source, str) else None
    if key is not None:
        cached = _COMPILED.get(key)
        if cached is not None:
            _COMPILED.move_to_end(key)
            return cached
    with _collector.paused():  # the tree is gone when it ends: see _collector
        plan = _compile(source, granted, allowed)
    if key is not None:
        _COMPILED[key] = plan
        if len(_COMPILED) > _CACHE_SIZE:
            _COMPILED.popitem(last=False)
    return plan


def check_plan(
    source: str,
    *,
    tools: Iterable[str] | None = None,
    allowed_imports: Iterable[str] = DEFAULT_IMPORTS,
) -> Report:
    """The report of a valid plan (raises :class:`PlanRejected` otherwise), for a host that
    runs the plan elsewhere: validated as :func:`compile_plan` does, without compiling it
    here (a quarter of the cost), unless it is compiled already."""
    allowed = frozenset(allowed_imports)
    granted = None if tools is None else frozenset(tools)
    cached = _COMPILED.get((source, granted, allowed)) if isinstance(source, str) else None
    if cached is not None:
        return cached.report
    with _collector.paused():
        report = analyse(source, tools=granted, allowed_imports=allowed)[0]
    if not report.ok:
        raise PlanRejected(report)
    return report


_CACHE_SIZE = 256
_COMPILED: OrderedDict[tuple[str, frozenset[str] | None, frozenset[str]], CompiledPlan] = (
    OrderedDict())


def _compile(source: str, tools: frozenset[str] | None,
             allowed: frozenset[str]) -> CompiledPlan:
    report, restricted = analysed(source, tools=tools, allowed_imports=allowed)
    if restricted is None:
        raise PlanRejected(report)
    try:
        code = compile(restricted, filename="<plan>", mode="exec")
    except (TypeError, ValueError):
        # The policy places the nodes it creates where the code they replace was; a node it
        # left without a position gets its parent's (a full pass costs a tenth of a compile,
        # so it is only paid when needed).
        ast.fix_missing_locations(restricted)
        code = compile(restricted, filename="<plan>", mode="exec")
    return CompiledPlan(source, report.sha256, report, code, allowed)
