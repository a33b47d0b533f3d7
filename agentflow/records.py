"""Frozen records passed to workflow code and returned by the public API."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from .status import InstanceStatus

Backoff = Literal["constant", "linear", "exponential"]
Duration = int | float | str | timedelta


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


@dataclass(frozen=True, slots=True)
class Event:
    """What ``run`` receives: the instance's params and where they came from."""

    payload: Any
    timestamp: datetime
    instance_id: str
    workflow_name: str


@dataclass(frozen=True, slots=True)
class StepEvent:
    """An event delivered to ``step.wait_for_event``."""

    type: str
    payload: Any
    timestamp: datetime


@dataclass(frozen=True, slots=True)
class Retries:
    """Retry policy of a step. ``limit`` counts retries (attempts = limit + 1).

    ``delay`` is a duration, or a function of ``(ctx, error)`` returning one; with ``backoff``
    'linear' the n-th retry waits delay·n, with 'exponential' delay·2^(n-1).
    """

    limit: int = 5
    delay: Duration | Callable[[StepContext, BaseException], Duration] = "10 seconds"
    backoff: Backoff = "exponential"


@dataclass(frozen=True, slots=True)
class StepConfig:
    """The effective configuration of a step, as seen by its body."""

    retries: Retries
    timeout: float


@dataclass(frozen=True, slots=True)
class StepContext:
    """Passed to a step body that takes one argument."""

    name: str
    count: int
    attempt: int
    config: StepConfig


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """Why an instance or step failed: the exception's class name and message."""

    name: str
    message: str


@dataclass(frozen=True, slots=True)
class InstanceDetails:
    """What ``instance.status()`` returns."""

    id: str
    workflow_name: str
    status: InstanceStatus
    output: Any = None
    error: ErrorInfo | None = None
    params: Any = None
    created_at: datetime | None = None
    updated_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class StepInfo:
    """One entry of an instance's journal (``instance.steps()``), in journal order.

    ``kind`` is do, sleep or wait. ``state`` is completed or errored (final), or sleeping,
    waiting or retrying. ``result`` is the decoded JSON result of a completed step (for a
    wait, ``{"type", "payload", "timestamp"}`` of the event it took); ``error`` says why an
    errored step failed. ``attempts`` counts the attempts made so far.
    """

    name: str
    count: int
    kind: str
    state: str
    result: Any = None
    error: ErrorInfo | None = None
    attempts: int = 0
    started_at: datetime | None = None
    finished_at: datetime | None = None
    event_type: str | None = None


@dataclass(frozen=True, slots=True)
class InstanceEvent:
    """One entry of an instance's history feed (``instance.events()``).

    ``type`` is one of: instance.queued, instance.started, instance.waiting, instance.paused,
    instance.resumed, instance.completed, instance.errored, instance.terminated,
    instance.restarted, step.started, step.completed, step.errored, attempt.started,
    attempt.failed, sleep.started, sleep.completed, wait.started, wait.completed,
    wait.timed_out, event.received.
    """

    seq: int
    instance_id: str
    workflow_name: str
    type: str
    timestamp: datetime
    step: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
