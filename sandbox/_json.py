"""JSON text for the messages between host and sandbox, with the per-call setup of
``json.JSONEncoder.encode`` and ``json.JSONDecoder.decode`` done once.

Both ends exchange a small message per step; the standard entry points build an encoder (or
skip whitespace and check for extra data in Python) on every call, which costs as much as the
encoding itself. These use the same C encoder and scanner, built once, with the standard
library's output: compact separators, ASCII only, no NaN or infinities. Reading is stricter
than ``json.loads`` in one way: the text must be exactly one value, without whitespace around
it (both ends write compact JSON).
"""

from __future__ import annotations

import json
import json.encoder
import json.scanner
from typing import Any


def _not_serializable(value: Any) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


_STANDARD_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)
# No marker table (a value that contains itself is stopped by the recursion limit instead):
# a shared table would keep a failed call's entries and refuse the next value.
_C_ENCODER: Any = getattr(json.encoder, "c_make_encoder", None)  # None off CPython
_encode = _C_ENCODER(
    None, _not_serializable, json.encoder.encode_basestring_ascii, None, ":", ",", False,
    False, False,
) if _C_ENCODER is not None else None
_scan = json.scanner.make_scanner(json.JSONDecoder())  # type: ignore[arg-type]  # (stub)


def dumps(value: Any) -> str:
    """Compact JSON text; TypeError for what JSON cannot hold, ValueError for NaN or
    infinities and for values that contain themselves or nest too deeply."""
    try:
        if _encode is None:
            return _STANDARD_ENCODER.encode(value)
        return "".join(_encode(value, 0))
    except RecursionError:
        raise ValueError("the value contains itself or nests too deeply") from None


def loads(text: str) -> Any:
    """The value of JSON ``text``: ``json.JSONDecodeError`` (a ValueError) for anything but
    exactly one JSON value."""
    try:
        value, end = _scan(text, 0)
    except StopIteration as stop:
        raise json.JSONDecodeError("Expecting value", text, stop.value) from None
    except RecursionError:
        raise json.JSONDecodeError("the value nests too deeply", text, 0) from None
    if end != len(text):
        raise json.JSONDecodeError("Extra data", text, end)
    return value
