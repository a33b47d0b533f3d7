"""The RestrictedPython policy for plans: RestrictedPython's rules, plus exactly the async
syntax a plan needs (``async def`` and ``await``), minus what a plan never needs."""

from __future__ import annotations

import ast
from dataclasses import dataclass

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


@dataclass(frozen=True, slots=True)
class PolicyError:
    line: int
    column: int
    message: str


class PlanPolicy(RestrictingNodeTransformer):
    """Collects errors with positions; allows ``async def``/``await``; forbids classes,
    ``global``, generators and ``async for``/``async with``."""

    def __init__(self) -> None:
        super().__init__()
        self.located: list[PolicyError] = []

    def error(self, node: ast.AST, info: str) -> None:
        super().error(node, info)
        self.located.append(PolicyError(
            getattr(node, "lineno", 0) or 0, getattr(node, "col_offset", 0) or 0, info
        ))

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> ast.AST:
        self.check_name(node, node.name)
        self.check_function_argument_names(node)
        with self.print_info.new_print_scope():
            node = self.node_contents_visit(node)
            self.inject_print_collector(node)  # type: ignore[arg-type]
        return node

    def visit_Await(self, node: ast.Await) -> ast.AST:
        return self.node_contents_visit(node)

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

    def visit_Attribute(self, node: ast.Attribute) -> ast.AST:
        if node.attr in FORBIDDEN_ATTRIBUTES:
            self.error(node, f'"{node.attr}" is a forbidden attribute in plans.')
        result: ast.AST = super().visit_Attribute(node)  # type: ignore[assignment]
        return result
