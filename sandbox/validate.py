"""``validate(source)``: parse, bound, restrict and check a plan; never raises on bad source."""

from __future__ import annotations

import ast
import threading
from collections import OrderedDict
from collections.abc import Iterable

from . import _collector, _rules
from ._policy import PlanPolicy
from .report import Diagnostic, Report

DEFAULT_IMPORTS = frozenset({
    "json", "math", "re", "datetime", "random", "uuid", "statistics", "itertools", "functools",
    "collections", "string",
})
MAX_SOURCE_BYTES = 256 * 1024
MAX_DEPTH = 100  # syntax-tree nesting; deeper plans are refused before any recursive pass


def validate(
    source: object,
    *,
    tools: Iterable[str] | None = None,
    allowed_imports: Iterable[str] = DEFAULT_IMPORTS,
) -> Report:
    """Check a plan. ``tools`` (the granted tool names) enables the unknown-tool check."""
    allowed = frozenset(allowed_imports)
    granted = None if tools is None else frozenset(tools)
    with _collector.paused():  # see _collector; a tree not kept is gone when it ends
        report, tree = analyse(source, tools=granted, allowed_imports=allowed)
        if tree is not None and type(source) is str:
            _ANALYSED.keep(source, granted, allowed, report, tree)
        del tree
    return report


def analysed(
    source: object, *, tools: frozenset[str] | None, allowed_imports: frozenset[str],
) -> tuple[Report, ast.Module | None]:
    """:func:`analyse`, answered by the work of a recent :func:`validate` of the same plan
    when there was one: the usual sequence, validate to show the report and then compile,
    analyses the plan once."""
    kept = _ANALYSED.take(source, tools, allowed_imports) if type(source) is str else None
    if kept is not None:
        return kept
    return analyse(source, tools=tools, allowed_imports=allowed_imports)


def analyse(
    source: object,
    *,
    tools: Iterable[str] | None = None,
    allowed_imports: Iterable[str] = DEFAULT_IMPORTS,
) -> tuple[Report, ast.Module | None]:
    """The report, and the restricted syntax tree ready to compile when the plan is valid."""
    text, early = _admit(source)
    if early is not None:
        return Report(text, (early,)), None
    tree, problem = _parse(text)
    if problem is not None:
        return Report(text, (problem,)), None
    assert tree is not None
    granted = None if tools is None else frozenset(tools)
    # The plan rules read the tree as written, iteratively (they also bound its depth, so
    # that the recursive policy below never meets a tree deep enough to crash it); the
    # policy then rewrites the tree in place.
    try:
        found = _rules.check(tree, allowed_imports=frozenset(allowed_imports), tools=granted,
                             max_depth=MAX_DEPTH)
    except _rules.TooDeep as deep:
        return Report(text, (deep.diagnostic,)), None
    found += _restricted(tree)
    report = Report(text, tuple(_dedupe(found)))
    return report, tree if report.ok else None


class _Analysed:
    """The restricted trees of the last few valid plans :func:`validate` saw, each handed
    to the first compile of the same text. Bounded in count and in source size: a tree
    costs a few hundred bytes per line of plan."""

    MAX_ENTRIES = 4
    MAX_SOURCE_CHARS = 64 * 1024

    def __init__(self) -> None:
        self._entries: OrderedDict[
            tuple[str, frozenset[str]], tuple[frozenset[str] | None, Report, ast.Module]
        ] = OrderedDict()
        self._lock = threading.Lock()

    def keep(self, source: str, tools: frozenset[str] | None, allowed: frozenset[str],
             report: Report, tree: ast.Module) -> None:
        if len(source) > self.MAX_SOURCE_CHARS:
            return
        with self._lock:
            self._entries[(source, allowed)] = (tools, report, tree)
            self._entries.move_to_end((source, allowed))
            while len(self._entries) > self.MAX_ENTRIES:
                self._entries.popitem(last=False)

    def take(self, source: str, tools: frozenset[str] | None,
             allowed: frozenset[str]) -> tuple[Report, ast.Module] | None:
        with self._lock:
            entry = self._entries.pop((source, allowed), None)
        if entry is None:
            return None
        checked_tools, report, tree = entry
        # The tree does not depend on the tools; the report does, through the unknown-tool
        # check only. A plan valid against some tools is valid, with the same report, when
        # no tools are named; against other named tools it must be checked again.
        if tools == checked_tools or tools is None:
            return report, tree
        return None


_ANALYSED = _Analysed()


def _admit(source: object) -> tuple[str, Diagnostic | None]:
    if not isinstance(source, str):
        return "", Diagnostic(
            "not-text", 1, 0, f"the plan must be Python source text, got {type(source).__name__}",
            "pass the module source as a str",
        )
    if len(source.encode("utf-8", "surrogatepass")) > MAX_SOURCE_BYTES:
        return source, Diagnostic(
            "too-large", 1, 0, f"the plan is larger than {MAX_SOURCE_BYTES // 1024} KiB",
            "write a shorter plan; move repeated logic into helper functions",
        )
    if "\x00" in source:
        return source, Diagnostic("syntax-error", 1, 0, "the plan contains a NUL character",
                                  "remove the NUL character")
    return source, None


def _parse(text: str) -> tuple[ast.Module | None, Diagnostic | None]:
    try:
        return ast.parse(text, filename="<plan>", mode="exec"), None
    except SyntaxError as exc:
        return None, Diagnostic(
            "syntax-error", exc.lineno or 1, max(0, (exc.offset or 1) - 1),
            f"syntax error: {exc.msg}", "fix the syntax; the plan must be valid Python 3.11",
        )
    except (RecursionError, MemoryError, ValueError) as exc:
        return None, Diagnostic(
            "too-deep", 1, 0, f"the plan cannot be parsed: {type(exc).__name__}",
            "flatten deeply nested expressions into several statements",
        )


def _restricted(tree: ast.Module) -> list[Diagnostic]:
    policy = PlanPolicy()
    policy.visit(tree)  # rewrites the tree: attribute access through guards, and so on
    return [
        Diagnostic("restricted", e.line, e.column, e.message,
                   "plans use a safe subset of Python: no names or attributes starting with "
                   "'_', no exec/eval, no classes or generators; use plain functions and data")
        for e in policy.located
    ]


def _dedupe(found: list[Diagnostic]) -> list[Diagnostic]:
    seen: set[tuple[str, int, int]] = set()
    out = []
    for d in sorted(found, key=lambda d: (d.line, d.column, d.code)):
        key = (d.code, d.line, d.column)
        if key not in seen:
            seen.add(key)
            out.append(d)
    return out
