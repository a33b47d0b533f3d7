"""Errors of the planners package, under agentflow's one root."""

from __future__ import annotations

from typing import TYPE_CHECKING

from agentflow import AgentflowError

if TYPE_CHECKING:
    from .draft import PlanDraft


class PlannerError(AgentflowError):
    """Base of the planners package's errors."""


class ModelError(PlannerError):
    """The chat model could not be reached or answered with something unusable."""


class MissingDependencyError(PlannerError, ImportError):
    """An optional dependency is not installed; the message says which extra to install."""


class PlanningFailed(PlannerError):
    """The model did not produce a valid plan within the allowed repair rounds.

    ``draft`` holds every round's source and diagnostics; ``draft.failure`` says why."""

    def __init__(self, draft: PlanDraft) -> None:
        self.draft = draft
        super().__init__(draft.failure or "planning failed")


def missing(package: str, extra: str) -> MissingDependencyError:
    return MissingDependencyError(
        f"this needs the {package!r} package, which is not installed; install it with "
        f"pip install 'agentflow[{extra}]'"
    )
