"""The status of a workflow instance."""

from __future__ import annotations

from enum import StrEnum


class InstanceStatus(StrEnum):
    """Status strings; members compare equal to the plain strings ('complete' etc.)."""

    QUEUED = "queued"
    RUNNING = "running"
    PAUSED = "paused"
    ERRORED = "errored"
    TERMINATED = "terminated"
    COMPLETE = "complete"
    WAITING = "waiting"
    WAITING_FOR_PAUSE = "waiting_for_pause"
    UNKNOWN = "unknown"

    @property
    def is_finished(self) -> bool:
        return self in _FINISHED


_FINISHED = frozenset({InstanceStatus.COMPLETE, InstanceStatus.ERRORED, InstanceStatus.TERMINATED})
FINISHED = frozenset(str(s) for s in _FINISHED)
