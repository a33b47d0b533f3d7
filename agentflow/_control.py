"""Engine control flow. These derive from BaseException so ``except Exception`` in a plan
cannot swallow them."""

from __future__ import annotations


class Suspend(BaseException):
    """The run stops here and hibernates until a timer, an event or a resume wakes it."""


class Stop(BaseException):
    """The run must stop at once: the instance was terminated, restarted or lost its lease."""
