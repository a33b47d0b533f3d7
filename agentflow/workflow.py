"""Workflow code: an ``af.Workflow`` subclass or a plain ``async def run(event, step)``."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from .errors import InvalidArgumentError
from .records import Event
from .step import Step

Runner = Callable[[Event, Step], Awaitable[Any]]


class Workflow:
    """Subclass and implement ``run``. A fresh object is made for every run of an instance, so
    keep durable state in steps, not in attributes."""

    async def run(self, event: Event, step: Step) -> Any:
        raise NotImplementedError(
            f"{type(self).__name__} must implement async def run(event, step)"
        )


def as_runner(code: object) -> Runner:
    """The ``run(event, step)`` callable for workflow code, or a clear error."""
    if inspect.isclass(code):
        method = getattr(code, "run", None)
        if not inspect.iscoroutinefunction(method):
            raise InvalidArgumentError(
                f"workflow class {code.__name__} needs 'async def run(self, event, step)'"
            )
        cls: Callable[[], Any] = code

        async def run_class(event: Event, step: Step) -> Any:
            return await cls().run(event, step)

        return run_class
    if isinstance(code, Workflow) or (
        not inspect.isfunction(code) and inspect.iscoroutinefunction(getattr(code, "run", None))
    ):
        bound: Runner = code.run  # type: ignore[attr-defined]
        return bound
    if inspect.iscoroutinefunction(code):
        return code
    raise InvalidArgumentError(
        f"workflow code must be an af.Workflow subclass or 'async def run(event, step)', "
        f"got {type(code).__name__}"
    )
