"""Checks for user-supplied ids, names, types and durations, each raising a typed error."""

from __future__ import annotations

import functools
import math
import re
from datetime import datetime, timedelta

from .errors import (
    InvalidArgumentError,
    InvalidDurationError,
    InvalidEventTypeError,
    InvalidIdError,
    InvalidStepNameError,
)

_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*")
_EVENT_TYPE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:-]*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]+)\s*")

MAX_ID_LENGTH = 100
MAX_STEP_NAME_LENGTH = 256
MAX_EVENT_TYPE_LENGTH = 100

_UNIT_SECONDS = {
    "millisecond": 0.001,
    "ms": 0.001,
    "second": 1.0,
    "sec": 1.0,
    "s": 1.0,
    "minute": 60.0,
    "min": 60.0,
    "hour": 3600.0,
    "h": 3600.0,
    "day": 86400.0,
    "week": 7 * 86400.0,
    "month": 30 * 86400.0,
    "year": 365 * 86400.0,
}


def instance_id(value: object) -> str:
    if not isinstance(value, str):
        raise InvalidIdError(
            f"instance id must be a string, got {type(value).__name__}; "
            "pass a str such as 'order-42' or omit id to get a generated one"
        )
    if not value or len(value) > MAX_ID_LENGTH or not _ID.fullmatch(value):
        raise InvalidIdError(
            f"invalid instance id {value[:120]!r}: use 1-{MAX_ID_LENGTH} characters of letters, "
            "digits, '_' and '-', not starting with '-'"
        )
    return value


def stored_instance_id(value: object) -> str:
    """An id as stored: a user's id, or a tenant's ('<tenant>.<id>', see agentflow.dispatch)."""
    if isinstance(value, str) and value.count(".") == 1:
        tenant, local = value.split(".")
        instance_id(tenant)
        instance_id(local)
        return value
    return instance_id(value)


def step_name(value: object) -> str:
    if type(value) is str and 0 < len(value) <= MAX_STEP_NAME_LENGTH and value.isprintable():
        return value  # fast path: printable means no control characters
    if not isinstance(value, str):
        raise InvalidStepNameError(
            f"step name must be a string, got {type(value).__name__}; "
            "give every step a fixed, descriptive name such as 'fetch user'"
        )
    if not value or len(value) > MAX_STEP_NAME_LENGTH:
        raise InvalidStepNameError(
            f"step name must have 1-{MAX_STEP_NAME_LENGTH} characters, got {len(value)}"
        )
    if _CONTROL.search(value):
        raise InvalidStepNameError(
            f"step name {value[:60]!r} contains a control character; remove newlines, tabs "
            "and other control characters"
        )
    return value


def event_type(value: object) -> str:
    if not isinstance(value, str):
        raise InvalidEventTypeError(
            f"event type must be a string, got {type(value).__name__}"
        )
    if not value or len(value) > MAX_EVENT_TYPE_LENGTH or not _EVENT_TYPE.fullmatch(value):
        raise InvalidEventTypeError(
            f"invalid event type {value[:120]!r}: use 1-{MAX_EVENT_TYPE_LENGTH} characters of "
            "letters, digits, '_', '-', '.' and ':', starting with a letter, digit or '_'"
        )
    return value


def duration(value: object, *, what: str = "duration") -> float:
    """Seconds in ``value``: a number of seconds, a ``timedelta`` or a string like '10 seconds'."""
    if isinstance(value, bool):
        raise InvalidDurationError(f"{what} must be a number of seconds or a string, not a bool")
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, (int, float)):
        try:
            seconds = float(value)
        except OverflowError:  # an int beyond any float
            seconds = math.inf
    elif isinstance(value, str):
        seconds = _parse_duration(value, what)
    else:
        raise InvalidDurationError(
            f"{what} must be seconds (int or float), a timedelta or a string like "
            f"'10 seconds', got {type(value).__name__}"
        )
    if not math.isfinite(seconds) or seconds < 0:
        raise InvalidDurationError(
            f"{what} must be a finite, non-negative time, got {_brief(value)}")
    return seconds


def _brief(value: object) -> str:
    """``value`` for a message: an int too long to print is described, not printed."""
    if isinstance(value, int) and value.bit_length() > 256:
        return f"an integer of {value.bit_length()} bits"
    return repr(value)[:80]


def _parse_duration(text: str, what: str) -> float:
    # (only short texts are remembered: a plan repeats a few like '7 days')
    seconds = (_duration_text_seconds(text) if len(text) <= 40
               else _duration_text_seconds.__wrapped__(text))
    if seconds is None:
        raise InvalidDurationError(
            f"invalid {what} {text[:60]!r}: write 'N unit' with unit one of millisecond, second, "
            "minute, hour, day, week, month, year (plural allowed), e.g. '10 seconds'"
        )
    return seconds


@functools.lru_cache(maxsize=256)  # plans repeat the same few texts ('7 days') on every wait
def _duration_text_seconds(text: str) -> float | None:
    match = _DURATION.fullmatch(text)
    unit = match.group(2).lower() if match else ""
    if match and unit not in _UNIT_SECONDS and unit.endswith("s"):
        unit = unit[:-1]
    if not match or unit not in _UNIT_SECONDS:
        return None
    return float(match.group(1)) * _UNIT_SECONDS[unit]


def timestamp(value: object, *, what: str = "time") -> float:
    """Epoch seconds from an aware ``datetime`` or a number of epoch seconds."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise InvalidArgumentError(
                f"{what} is a naive datetime; pass an aware one, e.g. "
                "datetime(2030, 1, 1, tzinfo=timezone.utc)"
            )
        return value.timestamp()
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    raise InvalidArgumentError(
        f"{what} must be an aware datetime or epoch seconds, got {type(value).__name__}"
    )


def positive_int(value: object, *, what: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidArgumentError(f"{what} must be an int >= {minimum}, got {value!r}")
    return value
