"""Which step's body a tool call comes from, for the host's tools to see.

A sandbox process tags every tool call with the step (name, occurrence) whose body made it; the
host runs the tool inside :func:`step_scope` of that step. Host code that runs plans in this
process enters the scope itself around each step body. Tools read it with
:func:`calling_step` (None outside any step body)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

StepKey = tuple[str, int]

_CALLING: ContextVar[StepKey | None] = ContextVar("sandbox_calling_step", default=None)


def calling_step() -> StepKey | None:
    """The (name, occurrence) of the step whose body is calling, if known."""
    return _CALLING.get()


@contextmanager
def step_scope(key: StepKey | None) -> Iterator[None]:
    token = _CALLING.set(key)
    try:
        yield
    finally:
        _CALLING.reset(token)


class NonRetryableError(Exception):
    """Raised by a plan (or a tool) to fail its step at once, without retries. Hosts honour
    any exception whose ``non_retryable`` attribute is True."""

    non_retryable = True
