"""What a step body depends on, as one digest: its code and the data it closes over.

Two step bodies with the same fingerprint do the same thing with the same inputs, so a revised
plan may take the result an earlier plan journaled for such a body instead of running it again.
The digest covers the body's bytecode, constants and names (not its line numbers, so moving a
step in the file keeps its fingerprint), the values of the variables it closes over, its
default arguments, and the data values of the module globals it reads. An event contributes
its payload only: a revised plan runs as a new instance, with a new id and timestamp.

A body that depends on something that is not plain data (an open file, a custom object) has no
fingerprint: ``inputs_fingerprint`` returns None and such a step is never reused.
"""

from __future__ import annotations

import functools
import hashlib
import json
import types
from collections.abc import Callable, Mapping
from datetime import date, datetime, time, timedelta
from typing import Any

_MAX_DEPTH = 20


class _Opaque(Exception):
    """The body depends on a value that is not data."""


def inputs_fingerprint(fn: Callable[..., Any]) -> str | None:
    """The sha256 hex digest of what ``fn`` does and the data it reads; None when unknown."""
    try:
        described = _Describer().function(fn, 0)
        text = json.dumps(described, sort_keys=True, separators=(",", ":"), allow_nan=True)
    except (_Opaque, TypeError, ValueError, RecursionError):
        return None
    return hashlib.sha256(text.encode()).hexdigest()


def _code(code: types.CodeType) -> dict[str, Any]:
    return {
        "bytecode": code.co_code.hex(),
        "consts": [_const(c) for c in code.co_consts],
        "names": list(code.co_names),
        "varnames": list(code.co_varnames),
        "freevars": list(code.co_freevars),
    }


def _const(value: Any) -> Any:
    if isinstance(value, types.CodeType):
        return _code(value)
    if isinstance(value, (tuple, frozenset)):
        items = [_const(v) for v in value]
        return {"tuple" if isinstance(value, tuple) else "set": items}
    return repr(value)


def _global_names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _global_names(const)
    return names


def _is_input(value: Any, namespace: Mapping[str, Any]) -> bool:
    """A global a body depends on: a data value, or a function of the same module (a plan's
    helper: changing it changes what the body does)."""
    if isinstance(value, types.FunctionType):
        return value.__globals__ is namespace
    return value is None or isinstance(value, (bool, int, float, str, list, tuple, dict))


class _Describer:
    """Turns a callable into JSON-able data; plan functions it reaches are described once."""

    def __init__(self) -> None:
        self.seen: set[int] = set()

    def function(self, fn: Any, depth: int) -> Any:
        if depth > _MAX_DEPTH:
            raise _Opaque
        if isinstance(fn, functools.partial):
            return {"partial": self.function(fn.func, depth + 1),
                    "args": self.data(fn.args, depth), "keywords": self.data(fn.keywords, depth)}
        if isinstance(fn, types.MethodType):
            return {"method": self.function(fn.__func__, depth + 1),
                    "self": self.data(fn.__self__, depth)}
        tool = getattr(fn, "sandbox_tool", None)
        if isinstance(tool, str):  # a granted tool: known by its name
            return {"tool": tool}
        code = getattr(fn, "__code__", None)
        if not isinstance(code, types.CodeType):
            raise _Opaque  # a builtin or an object with __call__: nothing to look into
        if id(fn) in self.seen:  # recursion: the function is being described already
            return {"again": code.co_name}
        self.seen.add(id(fn))
        try:
            cells = [cell.cell_contents for cell in fn.__closure__ or ()]
        except ValueError:  # an empty cell: a variable assigned after the body was made
            raise _Opaque from None
        namespace = getattr(fn, "__globals__", {})
        return {
            "code": _code(code),
            "closure": {name: self.data(v, depth + 1) for name, v in zip(code.co_freevars, cells,
                                                                       strict=False)},
            "defaults": self.data(fn.__defaults__, depth + 1),
            "kwdefaults": self.data(fn.__kwdefaults__, depth + 1),
            "globals": {name: self.data(namespace[name], depth + 1)
                        for name in sorted(_global_names(code))
                        if name in namespace and _is_input(namespace[name], namespace)},
        }


    def data(self, value: Any, depth: int) -> Any:
        if depth > _MAX_DEPTH:
            raise _Opaque
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        if isinstance(value, (list, tuple)):
            return [self.data(v, depth + 1) for v in value]
        if isinstance(value, Mapping):
            return {"map": sorted(([str(k), self.data(v, depth + 1)] for k, v in value.items()),
                                  key=lambda item: item[0])}
        if isinstance(value, (datetime, date, time)):
            return {"time": value.isoformat()}
        if isinstance(value, timedelta):
            return {"seconds": value.total_seconds()}
        if isinstance(value, types.ModuleType):
            return {"module": value.__name__}
        if callable(value) and hasattr(value, "__code__"):
            return {"function": self.function(value, depth + 1)}
        return self.runtime_object(value, depth)


    def runtime_object(self, value: Any, depth: int) -> Any:
        """The runtime's own objects, recognised by shape: this module imports nothing else."""
        if all(callable(getattr(value, m, None)) for m in ("do", "sleep", "wait_for_event")):
            return "<step>"  # the step API: the machinery, not an input
        if hasattr(value, "payload") and hasattr(value, "instance_id"):
            return {"event": self.data(value.payload, depth + 1)}
        if hasattr(value, "payload") and hasattr(value, "type"):
            return {"step_event": [self.data(value.type, depth + 1),
                                   self.data(value.payload, depth + 1)]}
        dump = getattr(value, "model_dump", None)
        if callable(dump):
            return {"model": self.data(dump(mode="json"), depth + 1)}
        raise _Opaque
