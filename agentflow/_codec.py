"""JSON encoding of everything agentflow stores: params, payloads, step results, outputs."""

from __future__ import annotations

import json
import json.encoder
import json.scanner
from collections.abc import Callable
from typing import Any

from .errors import PayloadError

MAX_VALUE_BYTES = 1024 * 1024


def _default(value: Any) -> Any:
    dump = getattr(value, "model_dump", None)  # pydantic v2 models, without importing pydantic
    if callable(dump):
        return dump(mode="json")
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def compact_encoder(default: Callable[[Any], Any] | None = None) -> Callable[[Any], str]:
    """``json.JSONEncoder(separators=(",", ":"), allow_nan=False, default=...).encode`` with
    its per-call setup done once: the standard ``encode`` builds a C encoder on every call,
    which costs as much as encoding a small value. A value that contains itself ends in
    RecursionError (there is no table of seen containers)."""
    make = getattr(json.encoder, "c_make_encoder", None)  # None off CPython
    if make is None:
        return json.JSONEncoder(default=default, separators=(",", ":"), allow_nan=False).encode
    fail = json.JSONEncoder().default  # the standard TypeError
    encode_c = make(None, default or fail, json.encoder.encode_basestring_ascii, None, ":", ",",
                    False, False, False)

    def dumps(value: Any) -> str:
        return "".join(encode_c(value, 0))

    return dumps


_encode = compact_encoder(_default)
_scan = json.scanner.make_scanner(json.JSONDecoder())  # type: ignore[arg-type]  # (stub)
_SCALARS = frozenset({int, float, str, bool, type(None)})


def encode(value: Any, *, what: str, limit: int = MAX_VALUE_BYTES) -> str:
    """Encode ``value`` as compact JSON, or raise :class:`PayloadError` saying why it can't be."""
    if value is None:  # the commonest results, without the encoder's call overhead
        return "null"
    if type(value) is bool:
        return "true" if value else "false"
    try:
        text = int.__repr__(value) if type(value) is int else _encode(value)
    except (TypeError, ValueError, RecursionError) as exc:
        raise PayloadError(
            f"{what} must be JSON-serialisable (dict, list, str, int, float, bool, None or a "
            f"pydantic model): {exc}"
        ) from None
    if len(text) > limit:  # ensure_ascii output: characters == bytes
        raise PayloadError(
            f"{what} is {len(text)} bytes of JSON, over the {limit}-byte limit; store large "
            "data elsewhere and pass a reference"
        )
    return text


def decode(text: str | None) -> Any:
    if text is None:
        return None
    # Stored text is compact JSON: the scanner alone reads it; anything else (whitespace
    # around it, or not JSON) goes through json.loads, for its value or its error.
    try:
        value, end = _scan(text, 0)
    except StopIteration:
        return json.loads(text)
    return value if end == len(text) else json.loads(text)


def round_trip(value: Any, text: str) -> Any:
    """What decoding ``text`` (the encoding of ``value``) gives, without decoding scalars."""
    return value if type(value) in _SCALARS else decode(text)
