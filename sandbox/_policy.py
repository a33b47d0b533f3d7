"""The RestrictedPython policy for plans: RestrictedPython's rules, plus exactly the async
syntax a plan needs (``async def`` and ``await``), minus what a plan never needs."""

from __future__ import annotations

import ast
from collections.abc import Callable
from dataclasses import dataclass
from types import FunctionType
from typing import Any, ClassVar

import RestrictedPython.transformer as _restricted
from RestrictedPython.transformer import (
    FORBIDDEN_FUNC_NAMES as _FORBIDDEN_NAMES,
)
from RestrictedPython.transformer import INSPECT_ATTRIBUTES as _INSPECT_ATTRIBUTES
from RestrictedPython.transformer import IOPERATOR_TO_STR, RestrictingNodeTransformer

# Attributes that lead from an ordinary object back to the interpreter without an underscore:
# frames, code objects, and the string formatting that can reach attributes by name.
FORBIDDEN_ATTRIBUTES = frozenset({
    "format", "format_map", "mro",
    "cr_frame", "cr_code", "cr_await", "cr_origin", "cr_running",
    "ag_frame", "ag_code", "ag_await", "ag_running",
    "gi_frame", "gi_code", "gi_yieldfrom",
    "tb_frame", "tb_next", "f_back", "f_builtins", "f_code", "f_globals", "f_locals",
    "f_trace", "co_code",
})


def _visit_list(visit: Callable[[Any], Any], items: list[Any]) -> None:
    """Visit the nodes of a field's list in place: a visitor may keep a node, replace it,
    drop it (None) or expand it into several (a list)."""
    rewritten: list[Any] | None = None
    for index, item in enumerate(items):
        if isinstance(item, ast.AST):
            new = visit(item)
            if new is not item:
                if rewritten is None:
                    rewritten = items[:index]
                if new is None:
                    continue
                if isinstance(new, ast.AST):
                    rewritten.append(new)
                else:
                    rewritten.extend(new)
                continue
        if rewritten is not None:
            rewritten.append(item)
    if rewritten is not None:
        items[:] = rewritten


def _place(new_node: Any, old_node: Any) -> None:
    """RestrictedPython's ``copy_locations``, without its full pass over the new subtree:
    the new node takes the old one's position, and so do the nodes it brought along that have
    none; the subtrees it wraps were placed when they were visited, so the walk stops there.
    (Any node this leaves unplaced is caught before compiling; see ``plan._compile``.)"""
    position = (old_node.lineno, old_node.col_offset, old_node.end_lineno,
                old_node.end_col_offset)
    pending = [new_node]
    while pending:
        node = pending.pop()
        node.lineno, node.col_offset, node.end_lineno, node.end_col_offset = position
        for field in node._fields:
            value = getattr(node, field, None)
            for child in value if type(value) is list else (value,):
                if (isinstance(child, ast.AST) and "lineno" in child._attributes
                        and getattr(child, "lineno", None) is None):
                    pending.append(child)


def _with_place(function: Any) -> Any:
    """The same method, its ``copy_locations`` calls going to ``_place``: a copy of the
    function over a copy of its module's globals, so RestrictedPython itself is unchanged for
    everyone else in the process."""
    if not isinstance(function, FunctionType) or "copy_locations" not in function.__code__.co_names:
        return function
    namespace = {**vars(_restricted), "copy_locations": _place}
    rebound = FunctionType(function.__code__, namespace, function.__name__,
                           function.__defaults__, function.__closure__)
    rebound.__kwdefaults__ = function.__kwdefaults__
    rebound.__qualname__ = function.__qualname__
    return rebound


class _PlacingTransformer(RestrictingNodeTransformer):
    """RestrictedPython's transformer with every method that places new nodes rebound to
    ``_place``: a compile spent a tenth of its time re-walking subtrees that were placed."""


for _name, _function in vars(RestrictingNodeTransformer).items():
    if _with_place(_function) is not _function:
        setattr(_PlacingTransformer, _name, _with_place(_function))


@dataclass(frozen=True, slots=True)
class PolicyError:
    line: int
    column: int
    message: str


class PlanPolicy(_PlacingTransformer):
    """Collects errors with positions; allows ``async def``/``await``; forbids classes,
    ``global``, generators and ``async for``/``async with``."""

    def __init__(self) -> None:
        super().__init__()
        self.located: list[PolicyError] = []

    # RestrictedPython's walk is ast.NodeTransformer's, which costs more than all its checks
    # together; ``visit`` and ``node_contents_visit`` below do the same walk faster (the same
    # visitor for each node, the same rewriting of fields and lists).
    _visitors: ClassVar[dict[type[ast.AST], Callable[[PlanPolicy, Any], Any] | None]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._visitors = {}

    def visit(self, node: ast.AST) -> Any:
        kind = type(node)
        try:
            visitor = self._visitors[kind]
        except KeyError:
            visitor = self._visitors[kind] = self._visitor_for(kind)
        return node if visitor is None else visitor(self, node)

    @classmethod
    def _visitor_for(cls, kind: type[ast.AST]) -> Callable[[PlanPolicy, Any], Any] | None:
        """The method that visits ``kind``; None for a node without fields (a context or an
        operator) that the policy lets through unchanged: a third of a tree, skipped. Which
        ones those are is asked of the policy itself, once per kind."""
        visitor: Callable[[PlanPolicy, Any], Any] = getattr(
            cls, "visit_" + kind.__name__, cls.generic_visit)
        if kind._fields:
            return visitor
        probe, sample = cls(), kind()
        passed = visitor(probe, sample) is sample
        return None if passed and not (probe.errors or probe.warnings or probe.used_names) \
            else visitor

    def node_contents_visit(self, node: Any) -> Any:
        visit, visitors = self.visit, self._visitors
        for field in node._fields:
            try:
                old = getattr(node, field)
            except AttributeError:
                continue
            if type(old) is list:
                _visit_list(visit, old)
            elif isinstance(old, ast.AST):
                if visitors.get(type(old), visit) is None:
                    continue  # a context or operator that passes unchanged
                new = visit(old)
                if new is None:
                    delattr(node, field)
                elif new is not old:
                    setattr(node, field, new)
        return node

    def error(self, node: ast.AST, info: str) -> None:
        super().error(node, info)
        self.located.append(PolicyError(
            getattr(node, "lineno", 0) or 0, getattr(node, "col_offset", 0) or 0, info
        ))

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> ast.AST:
        self.check_name(node, node.name)
        self.check_function_argument_names(node)
        with self.print_info.new_print_scope():
            visited: ast.AST = self.node_contents_visit(node)
            self.inject_print_collector(visited)  # type: ignore[arg-type]
        return visited

    def visit_Await(self, node: ast.Await) -> ast.AST:
        visited: ast.AST = self.node_contents_visit(node)
        return visited

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self.error(node, "Class definitions are not allowed in plans.")

    def visit_Global(self, node: ast.Global) -> None:
        self.error(node, "Global statements are not allowed in plans.")

    def visit_Yield(self, node: ast.Yield) -> None:
        self.error(node, "Generators (yield) are not allowed in plans.")

    def visit_YieldFrom(self, node: ast.YieldFrom) -> None:
        self.error(node, "Generators (yield from) are not allowed in plans.")

    def visit_AugAssign(self, node: ast.AugAssign) -> ast.AST | list[ast.stmt]:
        """``a[k] += v`` (which plans write all the time) through the guards:
        ``t1 = a; t2 = k; _write_(t1)[t2] = _inplacevar_('+=', _getitem_(t1, t2), v)``."""
        if not isinstance(node.target, ast.Subscript):
            result: ast.AST = super().visit_AugAssign(node)  # type: ignore[assignment]
            return result
        obj, key = self.gen_tmp_name(), self.gen_tmp_name()
        container = self.visit(node.target.value)
        index = self.visit(node.target.slice)
        value = self.visit(node.value)

        def load(name: str) -> ast.Name:
            return ast.Name(name, ast.Load())

        statements: list[ast.stmt] = [
            ast.Assign([ast.Name(obj, ast.Store())], container),
            ast.Assign([ast.Name(key, ast.Store())], index),
            ast.Assign(
                [ast.Subscript(ast.Call(load("_write_"), [load(obj)], []), load(key),
                               ast.Store())],
                ast.Call(load("_inplacevar_"), [
                    ast.Constant(IOPERATOR_TO_STR[type(node.op)]),
                    ast.Call(load("_getitem_"), [load(obj), load(key)], []),
                    value,
                ], []),
            ),
        ]
        for statement in statements:
            ast.copy_location(statement, node)
            ast.fix_missing_locations(statement)
        return statements

    # The most frequent nodes checked (and rewritten) as RestrictedPython does, without its
    # general walk: Name and Constant (a third of a plan's nodes) hold no node that needs
    # it, and attribute reads skip the re-walk of the call that replaces them. The walk test
    # compares these with RestrictedPython's own.
    # (method -> the RestrictedPython visitor it stands for)
    FAST_EQUIVALENTS: ClassVar[dict[str, str]] = {
        "visit_Constant": "visit_Constant", "visit_Name": "visit_Name",
        "_restricted_attribute": "visit_Attribute",
    }

    def visit_Constant(self, node: ast.Constant) -> ast.AST:
        return node

    def visit_Name(self, node: ast.Name) -> ast.AST:
        name = node.id
        if type(node.ctx) is ast.Load:
            if name == "print" or name == "printed":
                result: ast.AST = super().visit_Name(node)  # type: ignore[assignment]
                return result
            self.used_names[name] = True
        if name[:1] == "_" or name.endswith("__roles__") or name in _FORBIDDEN_NAMES:
            self.check_name(node, name)  # reports it
        return node

    def visit_Attribute(self, node: ast.Attribute) -> ast.AST:
        if node.attr in FORBIDDEN_ATTRIBUTES:
            self.error(node, f'"{node.attr}" is a forbidden attribute in plans.')
        return self._restricted_attribute(node)

    def _restricted_attribute(self, node: ast.Attribute) -> ast.AST:
        attr = node.attr
        if (type(node.ctx) is not ast.Load or attr[:1] == "_" or attr.endswith("__roles__")
                or attr in _INSPECT_ATTRIBUTES):
            result: ast.AST = super().visit_Attribute(node)  # type: ignore[assignment]
            return result
        # The common case, a plain read, as RestrictedPython writes it: a.b becomes
        # _getattr_(a, "b"), the new nodes placed where the attribute was.
        visited = self.node_contents_visit(node)
        position = (visited.lineno, visited.col_offset, visited.end_lineno,
                    visited.end_col_offset)
        name, constant = ast.Name("_getattr_", ast.Load()), ast.Constant(attr)
        call = ast.Call(name, [visited.value, constant], [])
        for new in (call, name, constant):
            new.lineno, new.col_offset, new.end_lineno, new.end_col_offset = position
        return call
