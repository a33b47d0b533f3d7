"""The globals a compiled plan runs with: guarded builtins, guards, tools and a print log."""

from __future__ import annotations

import builtins as _builtins
import collections
import collections.abc
import functools
import json
import operator
from collections.abc import Callable, Mapping
from typing import Any

from RestrictedPython.Guards import (
    full_write_guard,
    guarded_iter_unpack_sequence,
    guarded_unpack_sequence,
    safer_getattr,
    safer_getattr_raise,
)

from ._namespaces import importer
from ._policy import FORBIDDEN_ATTRIBUTES
from .calling import NonRetryableError

MAX_PRINT_BYTES = 64 * 1024

_EXCEPTIONS = (
    "ArithmeticError AssertionError AttributeError Exception IndexError KeyError LookupError "
    "NameError NotImplementedError OverflowError RuntimeError StopIteration TimeoutError "
    "TypeError UnicodeError ValueError ZeroDivisionError"
)
_FUNCTIONS = {
    "abs": abs, "all": all, "any": any, "bool": bool, "callable": callable, "chr": chr,
    "dict": dict, "divmod": divmod, "enumerate": enumerate, "filter": filter, "float": float,
    "frozenset": frozenset, "hash": hash, "int": int, "isinstance": isinstance,
    "issubclass": issubclass, "len": len, "list": list, "map": map, "max": max, "min": min,
    "ord": ord, "pow": pow, "range": range, "repr": repr, "reversed": reversed, "round": round,
    "set": set, "slice": slice, "sorted": sorted, "str": str, "sum": sum, "tuple": tuple,
    "zip": zip, "None": None, "True": True, "False": False, "bin": bin, "hex": hex,
    "oct": oct, "iter": iter, "next": next, "format": format, "ascii": ascii,
}


# Coroutines, generators and futures have methods without an underscore (send, throw,
# get_loop, add_done_callback...) that drive the engine's machinery by hand or reach the event
# loop. A plan only ever awaits them, so it may touch no attribute of theirs at all.
_OPAQUE = (
    collections.abc.Awaitable, collections.abc.Generator, collections.abc.AsyncGenerator,
    collections.abc.AsyncIterator,
)
_PLAIN_TYPES = frozenset({dict, list, str, int, float, bool, tuple, set, frozenset, bytes})
_MISSING = object()


# Whether each type met so far is opaque (the ABC checks cost more than the rest of an
# attribute read; a plan cannot create classes, so the table stays small).
_OPAQUE_TYPES: dict[type, bool] = {}


def _opaque(kind: type, obj: object) -> bool:
    opaque = _OPAQUE_TYPES.get(kind)
    if opaque is None:
        if len(_OPAQUE_TYPES) > 4096:
            _OPAQUE_TYPES.clear()
        opaque = _OPAQUE_TYPES[kind] = isinstance(obj, _OPAQUE)
    return opaque


def guarded_getattr(obj: object, name: str, default: Any = _MISSING) -> Any:
    if name in FORBIDDEN_ATTRIBUTES:
        raise AttributeError(f'"{name}" is a forbidden attribute in plans')
    kind = type(obj)
    if kind not in _PLAIN_TYPES and _opaque(kind, obj):
        raise AttributeError(
            f"plans may only await {type(obj).__name__} objects, not use their attributes"
        )
    if default is _MISSING:
        return safer_getattr_raise(obj, name)  # type: ignore[no-untyped-call]
    return safer_getattr(obj, name, default)  # type: ignore[no-untyped-call]


_WRITABLE = (dict, list, set, bytearray, collections.deque)


def guarded_write(obj: Any) -> Any:
    """Item and attribute writes: containers (and their subclasses, such as Counter) only."""
    if isinstance(obj, _WRITABLE):
        return obj
    return full_write_guard(obj)


def _getitem(obj: Any, key: Any) -> Any:
    return obj[key]


_INPLACE: dict[str, Callable[[Any, Any], Any]] = {
    "+=": operator.iadd, "-=": operator.isub, "*=": operator.imul, "/=": operator.itruediv,
    "//=": operator.ifloordiv, "%=": operator.imod, "**=": operator.ipow,
    "<<=": operator.ilshift, ">>=": operator.irshift, "&=": operator.iand,
    "|=": operator.ior, "^=": operator.ixor, "@=": operator.imatmul,
}


def _inplacevar(op: str, x: Any, y: Any) -> Any:
    return _INPLACE[op](x, y)


def _apply(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return fn(*args, **kwargs)


class PrintLog:
    """Where ``print`` in a plan goes: lines handed to ``sink``, at most ``limit`` bytes."""

    def __init__(
        self, sink: Callable[[str], None] | None, limit: int | None = MAX_PRINT_BYTES
    ) -> None:
        self._sink = sink
        self._left = limit if limit is not None else float("inf")
        self._cut = False

    def write(self, text: str) -> None:
        if self._cut:
            return
        size = len(text.encode("utf-8", "replace"))
        if size > self._left:
            kept = text.encode("utf-8", "replace")[: int(self._left)]
            text = kept.decode("utf-8", "ignore") + "\n[print output truncated]\n"
            self._cut = True
        self._left -= size
        if self._sink is not None:
            self._sink(text)

    def __call__(self, _getattr: Any = None) -> _Printer:
        """``_print_``: what RestrictedPython calls where a plan function prints."""
        return _Printer(self)


class _Printer:
    """What RestrictedPython's ``print`` calls: ``_print_(_getattr_)._call_print(...)``."""

    __slots__ = ("_log",)

    def __init__(self, log: PrintLog, _getattr: Any = None) -> None:
        self._log = log

    def _call_print(self, *objects: Any, sep: str = " ", end: str = "\n", **_: Any) -> None:
        self._log.write(str(sep).join(str(o) for o in objects) + str(end))

    def __call__(self) -> str:
        return ""


def _plain(value: Any) -> Any:
    """Values crossing from the host into a plan are plain data (a JSON round trip)."""
    return json.loads(json.dumps(value, default=_dump_model))


def _dump_model(value: Any) -> Any:
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return dump(mode="json")
    raise TypeError(f"a tool returned {type(value).__name__}, which is not plain data")


class Tools:
    """The ``tools`` object of a plan: one attribute per granted tool, results as plain data."""

    __slots__ = ("_call",)

    def __init__(self, tools: Mapping[str, Callable[..., Any]]) -> None:
        granted = dict(tools)

        def call(name: str) -> Callable[..., Any]:
            try:
                fn = granted[name]
            except KeyError:
                raise AttributeError(f"no tool named {name!r} is granted") from None

            def invoke(*args: Any, **kwargs: Any) -> Any:
                try:
                    result = fn(*_plain(list(args)), **_plain(kwargs))
                except Exception as exc:
                    raise _sanitized(exc) from None
                if hasattr(result, "__await__"):
                    return _plain_after(result)
                return _plain(result)

            invoke.sandbox_tool = name  # type: ignore[attr-defined]  # see fingerprint
            return invoke

        object.__setattr__(self, "_call", call)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return self._call(name)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("tools are read-only")


async def _plain_after(awaitable: Any) -> Any:
    try:
        result = await awaitable
    except Exception as exc:
        raise _sanitized(exc) from None
    return _plain(result)


_SAFE_ERRORS = frozenset(_EXCEPTIONS.split())
_TOOL_ERRORS: dict[str, type[Exception]] = {}


class ToolError(Exception):
    """Base of a tool's error, as a plan sees it, when its class is not a builtin."""


def _sanitized(exc: Exception) -> Exception:
    """A tool's error as plain data: the class name and message, none of the host objects
    the original carries (paths, requests, responses, tracebacks)."""
    name, message = type(exc).__name__, str(exc)
    if name in _SAFE_ERRORS and type(exc) is getattr(_builtins, name, None):
        return type(exc)(message)
    if name not in _TOOL_ERRORS:
        _TOOL_ERRORS[name] = type(name if name.isidentifier() else "ToolError", (ToolError,), {})
    clean = _TOOL_ERRORS[name](message)
    if getattr(exc, "non_retryable", False) is True:  # the step must fail without retries
        clean.non_retryable = True  # type: ignore[attr-defined]
    return clean


def _base_builtins() -> dict[str, Any]:
    builtins: dict[str, Any] = dict(_FUNCTIONS)
    builtins.update({name: getattr(_builtins, name) for name in _EXCEPTIONS.split()})
    builtins["NonRetryableError"] = NonRetryableError
    # What a timed-out wait or step raises, by the name the step API documents; any
    # TimeoutError matches (the host's WorkflowTimeoutError is one).
    builtins["WorkflowTimeoutError"] = TimeoutError
    return builtins


_BASE_BUILTINS = _base_builtins()


@functools.lru_cache(maxsize=64)
def _builtins_for(allowed_imports: frozenset[str]) -> dict[str, Any]:
    # Shared by every run with these imports: a plan has no name or attribute that leads to
    # its builtins table (``__builtins__`` and every underscore name are refused), so no run
    # can change what another sees; its globals, which it can change, are its own.
    builtins = _BASE_BUILTINS.copy()
    builtins["__import__"] = importer(allowed_imports)
    return builtins


def globals_template(
    tools: Mapping[str, Callable[..., Any]] | Tools, allowed_imports: frozenset[str],
) -> dict[str, Any]:
    """The module globals every run of a plan starts from, but ``_print_``: a run copies it
    and adds its own print log (see :func:`plan_globals`)."""
    return {
        "__builtins__": _builtins_for(allowed_imports),
        "__name__": "plan",
        "_getattr_": guarded_getattr,
        "_getitem_": _getitem,
        "_getiter_": iter,
        "_iter_unpack_sequence_": guarded_iter_unpack_sequence,
        "_unpack_sequence_": guarded_unpack_sequence,
        "_write_": guarded_write,
        "_inplacevar_": _inplacevar,
        "_apply_": _apply,
        "tools": tools if isinstance(tools, Tools) else Tools(tools),  # Tools hold no state
    }


def plan_globals(
    *, tools: Mapping[str, Callable[..., Any]] | Tools, allowed_imports: frozenset[str],
    print_sink: Callable[[str], None] | None, print_limit: int | None = MAX_PRINT_BYTES,
) -> dict[str, Any]:
    """Fresh module globals for one run of a plan (built per run: cheap, and nothing a run
    leaves in them reaches the next)."""
    namespace = globals_template(tools, allowed_imports)
    namespace["_print_"] = PrintLog(print_sink, print_limit)
    return namespace
