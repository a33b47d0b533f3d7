"""The rules that make a module a durable plan, checked on its syntax tree.

RestrictedPython decides what Python is safe; these rules decide what a plan may do so that it
replays deterministically: side effects and nondeterminism only inside ``step.do`` bodies,
nothing run at import, and a ``run(event, step)`` entry point.
"""

from __future__ import annotations

import ast
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .report import Diagnostic

STEP_METHODS_WITH_NAME = frozenset({"do", "sleep", "sleep_until", "wait_for_event",
                                    "wait_for_approval"})

# Builtins a plan must not use; most are simply absent at run time, but saying so up front
# gives the model a precise repair hint instead of a NameError later.
FORBIDDEN_BUILTINS = frozenset({
    "eval", "exec", "compile", "open", "input", "breakpoint", "globals", "locals", "vars",
    "dir", "getattr", "setattr", "delattr", "hasattr", "type", "object", "super", "id",
    "memoryview", "classmethod", "staticmethod", "property", "exit", "quit", "help",
    "BaseException", "SystemExit", "KeyboardInterrupt", "GeneratorExit",
})

# (module, attribute) pairs whose calls are nondeterministic; a bare module name means any
# function of it.
NONDETERMINISTIC = frozenset({
    ("random", "*"), ("uuid", "uuid1"), ("uuid", "uuid4"), ("datetime", "now"),
    ("datetime", "utcnow"),
    ("datetime", "today"), ("date", "today"), ("time", "*"), ("secrets", "*"),
})
NONDETERMINISTIC_BUILTINS = frozenset({"hash", "id"})


@dataclass
class _Context:
    step_names: set[str] = field(default_factory=lambda: {"step"})
    body_functions: set[str] = field(default_factory=set)
    imported: dict[str, tuple[str, str | None]] = field(default_factory=dict)  # alias -> origin
    tools: frozenset[str] | None = None


class TooDeep(Exception):
    """The tree nests deeper than allowed; carries the diagnostic."""

    def __init__(self, diagnostic: Diagnostic) -> None:
        super().__init__(diagnostic.message)
        self.diagnostic = diagnostic


def check(tree: ast.Module, *, allowed_imports: frozenset[str],
          tools: frozenset[str] | None, max_depth: int) -> list[Diagnostic]:
    """Every rule, in one iterative walk of the tree (so that a deep tree cannot exhaust the
    stack here); raises :class:`TooDeep` past ``max_depth``."""
    ctx = _Context(tools=tools)
    found = _check_run(tree, ctx)
    found += _check_module_level(tree)
    walk = _Walk(ctx, allowed_imports, max_depth)
    walk.run(tree)
    found += walk.found
    found += walk.scope_dependent()
    return sorted(found, key=lambda d: (d.line, d.column, d.code))


def _diag(node: ast.AST, code: str, message: str, hint: str) -> Diagnostic:
    return Diagnostic(code, getattr(node, "lineno", 1), getattr(node, "col_offset", 0),
                      message, hint)


# Nodes with no children that no rule looks at (contexts and operators): the walk skips them,
# which is a third of a typical tree.
_LEAVES = (ast.expr_context, ast.operator, ast.boolop, ast.cmpop, ast.unaryop)
_FUNCTIONS = frozenset({ast.FunctionDef, ast.AsyncFunctionDef})
# The commonest nodes (a third of a plan), which hold nothing to walk into.
_NO_CHILDREN = frozenset({ast.Name, ast.Constant})


def _node_classes(base: type[ast.AST]) -> set[type[ast.AST]]:
    found = {base}
    for sub in base.__subclasses__():
        found |= _node_classes(sub)
    return found


# Every node class the walk goes into: all of them but the leaves (one set lookup per child
# instead of two isinstance checks).
_WALKABLE = frozenset(kind for kind in _node_classes(ast.AST) if not issubclass(kind, _LEAVES))

# Where a node sits: None at module level, else (enclosing scope, function name or None,
# whether it is a step.do body argument). Whether a scope runs inside a step is decided after
# the walk, when every function passed to step.do by name is known.
_Scope = tuple[Any, str | None, bool] | None


class _Walk:
    """The one pass over the tree: depth, imports, step bodies, and the rules of each node.
    Rules that depend on whether a node runs inside a step body are kept for the end."""

    def __init__(self, ctx: _Context, allowed: frozenset[str], max_depth: int) -> None:
        self.ctx = ctx
        self.allowed = allowed
        self.max_depth = max_depth
        self.found: list[Diagnostic] = []
        self.tool_uses: list[tuple[_Scope, ast.Name]] = []
        self.calls: list[tuple[_Scope, ast.Call]] = []

    def run(self, tree: ast.Module) -> None:
        stack: list[tuple[ast.AST, int, _Scope]] = [(tree, 0, None)]
        pop, push = stack.pop, stack.append
        rules, walkable, max_depth = _RULES, _WALKABLE, self.max_depth
        while stack:
            node, depth, scope = pop()
            if depth > max_depth:
                raise TooDeep(_diag(
                    node, "too-deep", f"the plan nests more than {max_depth} levels deep",
                    "flatten deeply nested expressions and blocks into several statements",
                ))
            kind = type(node)
            rule = rules.get(kind)
            body = rule(self, node, scope) if rule is not None else None
            if kind in _NO_CHILDREN:
                continue
            if kind in _FUNCTIONS:
                scope = (scope, node.name, False)  # type: ignore[attr-defined]
            depth += 1
            if body is not None:  # a step.do call: its body argument runs inside the step
                assert isinstance(node, ast.Call)
                for part in _call_parts(node):
                    push((part, depth, (scope, None, True) if part is body else scope))
                continue
            for name in node._fields:
                value: Any = getattr(node, name, None)
                if type(value) is list:
                    for item in value:
                        if type(item) in walkable:
                            push((item, depth, scope))
                elif type(value) in walkable:
                    push((value, depth, scope))

    def scope_dependent(self) -> list[Diagnostic]:
        found = [_tool_outside_step(name) for scope, name in self.tool_uses
                 if not self._in_step(scope)]
        for scope, call in self.calls:
            if not self._in_step(scope):
                found += _nondeterminism_rule(call, self.ctx)
        return found

    def _in_step(self, scope: _Scope) -> bool:
        bodies = self.ctx.body_functions
        while scope is not None:
            parent, name, is_body = scope
            if is_body or name in bodies:
                return True
            scope = parent
        return False


# -- the entry point -------------------------------------------------------------------------
def _check_run(tree: ast.Module, ctx: _Context) -> list[Diagnostic]:
    runs = [
        n for n in tree.body
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == "run"
    ]
    if not runs:
        return [Diagnostic(
            "missing-run", 1, 0, "the plan defines no run function",
            "define the entry point at module level: async def run(event, step): ...",
        )]
    run = runs[-1]
    if isinstance(run, ast.FunctionDef):
        return [_diag(run, "run-not-async", "run is not an async function",
                      "write it as 'async def run(event, step):' and await every step call")]
    args = run.args
    positional = [*args.posonlyargs, *args.args]
    if (len(positional) != 2 or args.vararg or args.kwarg or args.kwonlyargs
            or args.defaults or args.kw_defaults):
        return [_diag(run, "run-signature", "run must take exactly (event, step)",
                      "use the signature 'async def run(event, step):' with no other arguments")]
    ctx.step_names.add(positional[1].arg)
    return []


# -- code that would run at import -----------------------------------------------------------
def _check_module_level(tree: ast.Module) -> list[Diagnostic]:
    found = []
    for index, node in enumerate(tree.body):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            found += _check_definition(node)
            continue
        if index == 0 and isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue  # the docstring
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
            call = _first_call(node.value)
            if call is None:
                continue
            found.append(_diag(
                call, "module-level-code", "a call at module level runs when the plan loads",
                "module level may only define constants, functions and imports; move the "
                "call into run() (inside a step.do body if it has side effects)",
            ))
            continue
        found.append(_diag(
            node, "module-level-code",
            f"{type(node).__name__} statement at module level runs when the plan loads",
            "module level may only define constants, functions and imports; move this into "
            "run()",
        ))
    return found


def _check_definition(node: ast.FunctionDef | ast.AsyncFunctionDef) -> list[Diagnostic]:
    found = []
    for decorator in node.decorator_list:
        found.append(_diag(
            decorator, "decorator", f"decorator on {node.name!r} runs when the plan loads",
            "remove the decorator; call helpers explicitly inside run()",
        ))
    for default in [*node.args.defaults, *(d for d in node.args.kw_defaults if d is not None)]:
        call = _first_call(default)
        if call is not None:
            found.append(_diag(
                call, "default-call",
                f"a default argument of {node.name!r} calls something when the plan loads",
                "use a constant default (for example None) and compute the value inside "
                "the function",
            ))
    return found


def _first_call(node: ast.AST) -> ast.AST | None:
    for child in ast.walk(node):
        if isinstance(child, (ast.Call, ast.Await)):
            return child
    return None


# -- the rules of single nodes ----------------------------------------------------------------
def _step_call(node: ast.AST, ctx: _Context) -> str | None:
    """The step method a call invokes (``step.do(...)`` -> 'do'), if it is one."""
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name) and node.func.value.id in ctx.step_names):
        return node.func.attr
    return None


def _body_argument(call: ast.Call) -> ast.expr | None:
    if len(call.args) >= 2:
        return call.args[1]
    return next((k.value for k in call.keywords if k.arg == "fn"), None)


def _call_parts(call: ast.Call) -> list[ast.AST]:
    return [call.func, *call.args, *(k.value for k in call.keywords)]


def _name_rule(walk: _Walk, node: ast.Name, scope: _Scope) -> None:
    if node.id == "tools":
        walk.tool_uses.append((scope, node))
    elif node.id in FORBIDDEN_BUILTINS:
        walk.found.append(_diag(
            node, "forbidden-name", f"{node.id!r} is not available in plans",
            "plans reach the outside world only through step calls and the granted "
            "tools; catch errors with 'except Exception'"))


def _tool_outside_step(node: ast.Name) -> Diagnostic:
    return _diag(
        node, "tool-outside-step", "tools are used outside a step.do body",
        "wrap the tool call in a step so its result is journaled, e.g. "
        "await step.do('fetch page', lambda: tools.fetch(url))",
    )


def _attribute_rule(walk: _Walk, node: ast.Attribute, scope: _Scope) -> None:
    tools = walk.ctx.tools
    if (tools is not None and isinstance(node.value, ast.Name) and node.value.id == "tools"
            and node.attr not in tools):
        granted = ", ".join(sorted(tools)) or "none"
        walk.found.append(_diag(node, "unknown-tool", f"no tool named {node.attr!r} is granted",
                                f"use one of the granted tools: {granted}"))


def _call_rule(walk: _Walk, node: ast.Call, scope: _Scope) -> ast.expr | None:
    """Records the call for the nondeterminism rule; checks step names; returns the body
    argument of a ``step.do`` call (whose name, when it is one, marks a body function)."""
    walk.calls.append((scope, node))
    method = _step_call(node, walk.ctx)
    if method in STEP_METHODS_WITH_NAME:
        walk.found += _step_name_rule(node, method)
    if method != "do":
        return None
    body = _body_argument(node)
    if isinstance(body, ast.Name):
        walk.ctx.body_functions.add(body.id)
    return body


def _import_rule(walk: _Walk, node: ast.Import, scope: _Scope) -> None:
    for alias in node.names:
        root = alias.name.split(".")[0]
        if alias.name not in walk.allowed:
            walk.found.append(_diag(
                node, "import-not-allowed", f"import of {alias.name!r} is not allowed",
                f"plans may import only: {_listed(walk.allowed)}; reach anything else through "
                "the granted tools (tools.<name>(...)) inside a step.do body",
            ))
        walk.ctx.imported[alias.asname or root] = (alias.name, None)


def _import_from_rule(walk: _Walk, node: ast.ImportFrom, scope: _Scope) -> None:
    module = node.module or ""
    if node.level or module not in walk.allowed:
        walk.found.append(_diag(
            node, "import-not-allowed", f"import from {module or '.'!r} is not allowed",
            f"plans may import only: {_listed(walk.allowed)}",
        ))
    for alias in node.names:
        walk.ctx.imported[alias.asname or alias.name] = (module, alias.name)


def _listed(allowed: frozenset[str]) -> str:
    return ", ".join(sorted(allowed))


def _nondeterminism_rule(node: ast.Call, ctx: _Context) -> list[Diagnostic]:
    what = _nondeterministic(node.func, ctx)
    if what is None:
        return []
    return [_diag(
        node, "nondeterministic-outside-step", f"{what} is nondeterministic outside a step",
        f"compute it inside a step so replays see the same value, e.g. "
        f"value = await step.do('pick value', lambda: {what}(...))",
    )]


def _nondeterministic(func: ast.expr, ctx: _Context) -> str | None:
    if isinstance(func, ast.Name):
        if func.id in NONDETERMINISTIC_BUILTINS:
            return func.id
        module, name = ctx.imported.get(func.id, ("", None))
        if name is not None and _is_nondeterministic(module, name):
            return func.id
        return None
    if isinstance(func, ast.Attribute):
        parts = _dotted(func)
        if parts is None:
            return None
        module, name = ctx.imported.get(parts[0], (parts[0], None))
        chain = [*module.split("."), *([name] if name else []), *parts[1:]]
        for owner, attr in itertools.pairwise(chain):
            if _is_nondeterministic(owner, attr):
                return ".".join(parts)
    return None


def _is_nondeterministic(owner: str, attr: str) -> bool:
    return (owner, attr) in NONDETERMINISTIC or (owner, "*") in NONDETERMINISTIC


def _dotted(node: ast.expr) -> list[str] | None:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return [node.id, *reversed(parts)]


def _step_name_rule(node: ast.Call, method: str) -> list[Diagnostic]:
    name = node.args[0] if node.args else next(
        (k.value for k in node.keywords if k.arg == "name"), None
    )
    if name is None:
        return [_diag(node, "step-name-not-string", f"step.{method} has no step name",
                      f"give it a fixed, descriptive name: step.{method}('fetch user', ...)")]
    if isinstance(name, ast.Constant) and not isinstance(name.value, str):
        return [_diag(name, "step-name-not-string",
                      f"step name {name.value!r} is not a string",
                      "step names are strings; write the name in quotes, e.g. 'step 1'")]
    if isinstance(name, (ast.List, ast.Dict, ast.Set, ast.Tuple, ast.Lambda)):
        return [_diag(name, "step-name-not-string", "the step name is not a string",
                      "step names are strings; write the name in quotes")]
    return []


def _except_handler_rule(walk: _Walk, node: ast.ExceptHandler, scope: _Scope) -> None:
    if node.type is None:
        walk.found.append(_diag(
            node, "bare-except", "a bare 'except:' would also catch the engine's control flow",
            "write 'except Exception:' (or a narrower exception)"))


def _try_rule(walk: _Walk, node: ast.Try | ast.TryStar, scope: _Scope) -> None:
    for statement in node.finalbody:
        for inner in ast.walk(statement):
            if isinstance(inner, (ast.Return, ast.Break, ast.Continue)):
                walk.found.append(_diag(
                    inner, "finally-exit",
                    f"'{type(inner).__name__.lower()}' inside 'finally' would swallow the "
                    "engine's control flow",
                    "move the return/break/continue out of the finally block",
                ))


# Each rule looks at one kind of node; dispatching on the type keeps the walk cheap.
_RULES: dict[type[ast.AST], Callable[[_Walk, Any, _Scope], ast.expr | None]] = {
    ast.Name: _name_rule,
    ast.Attribute: _attribute_rule,
    ast.Call: _call_rule,
    ast.Import: _import_rule,
    ast.ImportFrom: _import_from_rule,
    ast.ExceptHandler: _except_handler_rule,
    ast.Try: _try_rule,
    ast.TryStar: _try_rule,
}
