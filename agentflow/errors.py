"""The error tree. Every error agentflow raises derives from :class:`AgentflowError`.

Errors about bad input also derive from the matching builtin (``ValueError``, ``LookupError``,
``TypeError``) so callers can catch them the way they catch the standard library's.
Control flow that a plan must never swallow (suspending a run) lives in ``_control`` and derives
from ``BaseException`` instead.
"""

from __future__ import annotations


class AgentflowError(Exception):
    """Root of every error raised by agentflow."""


class NonRetryableError(AgentflowError):
    """Raise from a step body to fail the step at once, without further retries. Any
    exception whose ``non_retryable`` attribute is True is treated the same way (plans in the
    sandbox raise ``NonRetryableError`` of their own, which carries it)."""

    non_retryable = True


class WorkflowTimeoutError(AgentflowError, TimeoutError):
    """A step attempt or a ``wait_for_event`` ran out of time. Plans may catch it."""


class StepError(AgentflowError):
    """A journaled step failure whose original exception type cannot be rebuilt on replay.

    ``error_name`` keeps the original class name; ``str()`` keeps its message.
    """

    def __init__(self, message: str, *, error_name: str = "StepError") -> None:
        super().__init__(message)
        self.error_name = error_name


class InvalidArgumentError(AgentflowError, ValueError):
    """An argument has the wrong form. The message names the argument and the fix."""


class InvalidIdError(InvalidArgumentError):
    """An instance id is not 1-100 characters of ``[A-Za-z0-9_][A-Za-z0-9_-]*``."""


class InvalidStepNameError(InvalidArgumentError):
    """A step name is not a string of 1-256 characters without control characters."""


class InvalidEventTypeError(InvalidArgumentError):
    """An event type is not 1-100 characters of ``[A-Za-z0-9_][A-Za-z0-9_.:-]*``."""


class InvalidDurationError(InvalidArgumentError):
    """A duration is neither a non-negative number of seconds nor a string like '10 seconds'."""


class PayloadError(InvalidArgumentError):
    """A value to be stored (params, event payload, step result, output) is not
    JSON-serialisable or is larger than the limit."""


class DuplicateInstanceError(AgentflowError, ValueError):
    """``create`` was given an id that already exists in this workflow."""


class NotFoundError(AgentflowError, LookupError):
    """Base for unknown names and ids."""


class InstanceNotFoundError(NotFoundError):
    """No instance with this id exists (for this workflow or tenant)."""


class WorkflowNotFoundError(NotFoundError):
    """No workflow with this name is registered on the engine."""


class InvalidStateError(AgentflowError):
    """The operation is not allowed in the instance's current status
    (for example terminating an instance that already finished)."""


class StepLimitExceededError(AgentflowError):
    """The instance called more steps than its engine allows (``max_steps``)."""


class EngineClosedError(AgentflowError):
    """The engine was used after it was closed."""


class StorageError(AgentflowError):
    """The storage backend failed or holds data this version cannot read."""


__all__ = [
    "AgentflowError",
    "DuplicateInstanceError",
    "EngineClosedError",
    "InstanceNotFoundError",
    "InvalidArgumentError",
    "InvalidDurationError",
    "InvalidEventTypeError",
    "InvalidIdError",
    "InvalidStateError",
    "InvalidStepNameError",
    "NonRetryableError",
    "NotFoundError",
    "PayloadError",
    "StepError",
    "StepLimitExceededError",
    "StorageError",
    "WorkflowNotFoundError",
    "WorkflowTimeoutError",
]
