"""JSON encoding of everything agentflow stores: params, payloads, step results, outputs."""

from __future__ import annotations

import json
from typing import Any

from .errors import PayloadError

MAX_VALUE_BYTES = 1024 * 1024


def _default(value: Any) -> Any:
    dump = getattr(value, "model_dump", None)  # pydantic v2 models, without importing pydantic
    if callable(dump):
        return dump(mode="json")
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


_encoder = json.JSONEncoder(default=_default, separators=(",", ":"), allow_nan=False)
_SCALARS = frozenset({int, float, str, bool, type(None)})


def encode(value: Any, *, what: str, limit: int = MAX_VALUE_BYTES) -> str:
    """Encode ``value`` as compact JSON, or raise :class:`PayloadError` saying why it can't be."""
    if value is None:  # the commonest results, without the encoder's call overhead
        return "null"
    if type(value) is bool:
        return "true" if value else "false"
    try:
        text = int.__repr__(value) if type(value) is int else _encoder.encode(value)
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
    return None if text is None else json.loads(text)


def round_trip(value: Any, text: str) -> Any:
    """What decoding ``text`` (the encoding of ``value``) gives, without decoding scalars."""
    return value if type(value) in _SCALARS else json.loads(text)
