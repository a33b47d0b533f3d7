"""The wire's JSON: the same text and the same strictness as the standard library's, with
its per-call setup done once."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from sandbox import _json, _wire

VALUES: list[Any] = [
    None, True, False, 0, -1, 10 ** 30, 1.5, -0.0, 1e300, "", "é \u2028 \"quoted\" \\ \n",
    "\U0001f600", [], {}, [1, [2, [3, {"a": None}]]],
    {"op": "step", "method": "do", "name": "s", "body": 12, "call": 13, "speculative": True},
    {"nested": {"k": [1.25, "x", {"z": []}]}, "": 0, "1": "int-like key"},
]


@pytest.mark.parametrize("value", VALUES)
def test_values_encode_as_the_standard_library_does_and_come_back_equal(value: Any) -> None:
    text = _json.dumps(value)
    assert text == json.dumps(value, separators=(",", ":"), allow_nan=False)
    assert _json.loads(text) == value


def test_values_json_cannot_hold_are_refused_with_the_standard_errors() -> None:
    with pytest.raises(TypeError, match="set is not JSON serializable"):
        _json.dumps({"x": {1, 2}})
    for bad in (math.nan, math.inf, -math.inf):
        with pytest.raises(ValueError, match="Out of range float"):
            _json.dumps([bad])
    looped: list[Any] = []
    looped.append(looped)
    with pytest.raises(ValueError, match="contains itself"):
        _json.dumps(looped)
    # A failed call leaves nothing behind: the next value encodes normally.
    assert _json.dumps([looped[:0], {"a": 1}]) == '[[],{"a":1}]'


@pytest.mark.parametrize("text", [
    "", " ", "{", '{"a":1} x', '{"a":1}{}', "[1,]", "nul", "'a'", '{"a":1} ', "\x00",
    "[" * 100_000 + "]" * 100_000,
])
def test_anything_but_exactly_one_json_value_is_a_decode_error(text: str) -> None:
    with pytest.raises(json.JSONDecodeError):
        _json.loads(text)


def test_the_wire_turns_bad_messages_into_wire_errors() -> None:
    with pytest.raises(_wire.WireError, match="malformed JSON"):
        _wire.decode(b'{"op":"step"} trailing')
    with pytest.raises(_wire.WireError, match="without an 'op'"):
        _wire.decode(b"[1,2]")
    looped: dict[str, Any] = {"op": "x"}
    looped["self"] = looped
    with pytest.raises(_wire.WireError, match="cannot be sent"):
        _wire.encode(looped)
    assert _wire.decode(_wire.encode({"op": "ok", "v": [1.5]})[4:]) == {"op": "ok", "v": [1.5]}
