"""Turning exceptions into journal fields and back, so a failed step raises the same type on
every replay without running its body again."""

from __future__ import annotations

import contextlib
import functools
import json
import sys

from .errors import StepError


def describe(exc: BaseException) -> tuple[str, str, str]:
    """(name, message, detail) of an exception; detail is JSON with its class path and, when
    they are JSON values, its constructor arguments."""
    cls = type(exc)
    detail: dict[str, object] = {"class": f"{cls.__module__}:{cls.__qualname__}"}
    with contextlib.suppress(TypeError, ValueError):
        detail["args"] = json.loads(json.dumps(list(exc.args)))
    return cls.__name__, str(exc), json.dumps(detail)


def rebuild(name: str, message: str, detail: str | None) -> Exception:
    """An exception of the original class when it is loaded and can be rebuilt with the same
    message; otherwise a :class:`StepError` subclass carrying the original class name."""
    try:
        info = json.loads(detail) if detail else {}
    except ValueError:
        info = {}
    cls = _loaded_class(info.get("class"))
    if cls is not None:
        attempts = [info["args"]] if isinstance(info.get("args"), list) else []
        for args in [*attempts, [message]]:
            try:
                exc = cls(*args)
            except Exception:  # constructors that need other arguments
                continue
            if str(exc) == message:
                return exc
    return _stand_in(name)(message, error_name=name)


def _loaded_class(where: str | None) -> type[Exception] | None:
    if not where or ":" not in where:
        return None
    module_name, qualname = where.split(":", 1)
    target: object = sys.modules.get(module_name)  # never import: no side effects on replay
    for part in qualname.split("."):
        target = getattr(target, part, None)
    if isinstance(target, type) and issubclass(target, Exception):
        return target
    return None


@functools.lru_cache(maxsize=256)
def _stand_in(name: str) -> type[StepError]:
    if not name.isidentifier():
        return StepError
    return type(name, (StepError,), {"__module__": "agentflow.errors"})
