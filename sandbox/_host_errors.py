"""What goes wrong in a sandboxed run, as the host sees it: the sandbox's own failures, and
the plan's errors rebuilt as host exceptions."""

from __future__ import annotations

from typing import Any


class SandboxError(Exception):
    """A sandboxed run failed for a reason outside the plan's own code."""


class SandboxLimitError(SandboxError):
    """The run went over a limit (CPU time, memory) and its process was killed."""


class SandboxCrashed(SandboxError):
    """The sandbox process died or broke the protocol."""


_ERRORS: dict[str, type[Exception]] = {}


class PlanFailed(Exception):
    """Base of errors raised in a sandboxed plan whose class is not a builtin."""


def plan_error(info: dict[str, Any]) -> Exception:
    """The host-side exception for an error raised in the sandbox: the builtin class of that
    name, or a :class:`PlanFailed` subclass with the same class name."""
    name = str(info.get("name", "PlanFailed"))
    message = str(info.get("message", ""))
    builtin = getattr(__import__("builtins"), name, None)
    if isinstance(builtin, type) and issubclass(builtin, Exception) and name.isidentifier():
        error: Exception = builtin(message)
    else:
        if name not in _ERRORS:
            _ERRORS[name] = type(name if name.isidentifier() else "PlanFailed", (PlanFailed,),
                                 {})
        error = _ERRORS[name](message)
    if info.get("non_retryable") is True:  # the step fails without retries
        error.non_retryable = True  # type: ignore[attr-defined]
    return error
