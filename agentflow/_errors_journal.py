"""Turning exceptions into journal fields and back, so a failed step raises the same type on
every replay without running its body again."""

from __future__ import annotations

import functools
import sys

from .errors import StepError


def describe(exc: BaseException) -> tuple[str, str, str]:
    """(name, message, 'module:qualname') of an exception."""
    cls = type(exc)
    return cls.__name__, str(exc), f"{cls.__module__}:{cls.__qualname__}"


def rebuild(name: str, message: str, where: str | None) -> Exception:
    """An exception of the original class when it is loaded and takes a message; otherwise a
    :class:`StepError` subclass carrying the original class name."""
    cls = _loaded_class(where)
    if cls is not None:
        try:
            exc = cls(message)
        except Exception:  # constructors that need other arguments
            exc = None
        if isinstance(exc, Exception) and str(exc) == message:
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
