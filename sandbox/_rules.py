"""The rules that make a module a durable plan, checked on its syntax tree.

RestrictedPython decides what Python is safe; these rules decide what a plan may do so that it
replays deterministically: side effects and nondeterminism only inside ``step.do`` bodies,
nothing run at import, and a ``run(event, step)`` entry point.
"""

from __future__ import annotations

import ast
import itertools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

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
    """Every rule, in two iterative walks of the tree (so that a deep tree cannot exhaust the
    stack here); raises :class:`TooDeep` past ``max_depth``."""
    ctx = _Context(tools=tools)
    found = _check_run(tree, ctx)
    found += _check_module_level(tree)
    found += _survey(tree, allowed_imports, ctx, max_depth)
    found += list(_check_bodies(tree, ctx))
    return sorted(found, key=lambda d: (d.line, d.column, d.code))


def _diag(node: ast.AST, code: str, message: str, hint: str) -> Diagnostic:
    return Diagnostic(code, getattr(node, "lineno", 1), getattr(node, "col_offset", 0),
                      message, hint)


# -- the first walk: depth, imports, step bodies ---------------------------------------------
def _survey(
    tree: ast.Module, allowed: frozenset[str], ctx: _Context, max_depth: int
) -> list[Diagnostic]:
    found: list[Diagnostic] = []
    allowed_list = ", ".join(sorted(allowed))
    stack: list[tuple[ast.AST, int]] = [(tree, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > max_depth:
            raise TooDeep(_diag(
                node, "too-deep", f"the plan nests more than {max_depth} levels deep",
                "flatten deeply nested expressions and blocks into several statements",
            ))
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))
        if _step_call(node, ctx) == "do":
            assert isinstance(node, ast.Call)
            body = _body_argument(node)
            if isinstance(body, ast.Name):
                ctx.body_functions.add(body.id)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                root = alias.name.split(".")[0]
                if alias.name not in allowed:
                    found.append(_diag(
                        node, "import-not-allowed", f"import of {alias.name!r} is not allowed",
                        f"plans may import only: {allowed_list}; reach anything else through "
                        "the granted tools (tools.<name>(...)) inside a step.do body",
                    ))
                ctx.imported[alias.asname or root] = (alias.name, None)
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level or module not in allowed:
                found.append(_diag(
                    node, "import-not-allowed", f"import from {module or '.'!r} is not allowed",
                    f"plans may import only: {allowed_list}",
                ))
            for alias in node.names:
                ctx.imported[alias.asname or alias.name] = (module, alias.name)
    return found



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


# -- step bodies, tools, nondeterminism, names -----------------------------------------------
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


def _check_bodies(tree: ast.Module, ctx: _Context) -> Iterator[Diagnostic]:
    """Walk the tree knowing, at each node, whether it runs inside a step.do body."""
    stack: list[tuple[ast.AST, bool]] = [(tree, False)]
    while stack:
        node, in_step = stack.pop()
        yield from _check_node(node, in_step, ctx)
        for child, child_in_step in _children(node, in_step, ctx):
            stack.append((child, child_in_step))


def _children(node: ast.AST, in_step: bool, ctx: _Context) -> Iterable[tuple[ast.AST, bool]]:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        inside = in_step or node.name in ctx.body_functions
        return [(child, inside) for child in ast.iter_child_nodes(node)]
    if _step_call(node, ctx) == "do":
        assert isinstance(node, ast.Call)
        body = _body_argument(node)
        return [(child, in_step or child is body) for child in _call_parts(node)]
    return [(child, in_step) for child in ast.iter_child_nodes(node)]


def _call_parts(call: ast.Call) -> list[ast.AST]:
    return [call.func, *call.args, *(k.value for k in call.keywords)]


def _check_node(node: ast.AST, in_step: bool, ctx: _Context) -> Iterator[Diagnostic]:
    for check_one in _CHECKS_BY_TYPE.get(type(node), ()):
        yield from check_one(node, in_step, ctx)


def _tools_rule(node: ast.AST, in_step: bool, ctx: _Context) -> Iterator[Diagnostic]:
    if not (isinstance(node, ast.Name) and node.id == "tools"):
        return
    if not in_step:
        yield _diag(
            node, "tool-outside-step", "tools are used outside a step.do body",
            "wrap the tool call in a step so its result is journaled, e.g. "
            "await step.do('fetch page', lambda: tools.fetch(url))",
        )


def _unknown_tool_rule(node: ast.AST, in_step: bool, ctx: _Context) -> Iterator[Diagnostic]:
    if (ctx.tools is not None and isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name) and node.value.id == "tools"
            and node.attr not in ctx.tools):
        granted = ", ".join(sorted(ctx.tools)) or "none"
        yield _diag(node, "unknown-tool", f"no tool named {node.attr!r} is granted",
                    f"use one of the granted tools: {granted}")


def _nondeterminism_rule(node: ast.AST, in_step: bool, ctx: _Context) -> Iterator[Diagnostic]:
    if in_step or not isinstance(node, ast.Call):
        return
    what = _nondeterministic(node.func, ctx)
    if what is not None:
        yield _diag(
            node, "nondeterministic-outside-step", f"{what} is nondeterministic outside a step",
            f"compute it inside a step so replays see the same value, e.g. "
            f"value = await step.do('pick value', lambda: {what}(...))",
        )


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


def _step_name_rule(node: ast.AST, in_step: bool, ctx: _Context) -> Iterator[Diagnostic]:
    method = _step_call(node, ctx)
    if method not in STEP_METHODS_WITH_NAME:
        return
    assert isinstance(node, ast.Call)
    name = node.args[0] if node.args else next(
        (k.value for k in node.keywords if k.arg == "name"), None
    )
    if name is None:
        yield _diag(node, "step-name-not-string", f"step.{method} has no step name",
                    f"give it a fixed, descriptive name: step.{method}('fetch user', ...)")
    elif isinstance(name, ast.Constant) and not isinstance(name.value, str):
        yield _diag(name, "step-name-not-string",
                    f"step name {name.value!r} is not a string",
                    "step names are strings; write the name in quotes, e.g. 'step 1'")
    elif isinstance(name, (ast.List, ast.Dict, ast.Set, ast.Tuple, ast.Lambda)):
        yield _diag(name, "step-name-not-string", "the step name is not a string",
                    "step names are strings; write the name in quotes")


def _forbidden_name_rule(node: ast.AST, in_step: bool, ctx: _Context) -> Iterator[Diagnostic]:
    if isinstance(node, ast.Name) and node.id in FORBIDDEN_BUILTINS:
        yield _diag(node, "forbidden-name", f"{node.id!r} is not available in plans",
                    "plans reach the outside world only through step calls and the granted "
                    "tools; catch errors with 'except Exception'")


def _except_rule(node: ast.AST, in_step: bool, ctx: _Context) -> Iterator[Diagnostic]:
    if isinstance(node, ast.ExceptHandler) and node.type is None:
        yield _diag(node, "bare-except", "a bare 'except:' would also catch the engine's "
                    "control flow", "write 'except Exception:' (or a narrower exception)")
    if isinstance(node, ast.Try):
        for statement in node.finalbody:
            for inner in ast.walk(statement):
                if isinstance(inner, (ast.Return, ast.Break, ast.Continue)):
                    yield _diag(
                        inner, "finally-exit",
                        f"'{type(inner).__name__.lower()}' inside 'finally' would swallow the "
                        "engine's control flow",
                        "move the return/break/continue out of the finally block",
                    )


_Rule = Callable[[ast.AST, bool, _Context], Iterator[Diagnostic]]
# Each rule looks at one kind of node; dispatching on the type keeps the walk cheap.
_CHECKS_BY_TYPE: dict[type[ast.AST], tuple[_Rule, ...]] = {
    ast.Name: (_tools_rule, _forbidden_name_rule),
    ast.Attribute: (_unknown_tool_rule,),
    ast.Call: (_nondeterminism_rule, _step_name_rule),
    ast.ExceptHandler: (_except_rule,),
    ast.Try: (_except_rule,),
}
