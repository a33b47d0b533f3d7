"""Messages between the host and a sandbox process: length-prefixed JSON, nothing else.

JSON (never pickle) so that a compromised sandbox can send the host nothing but plain data.
"""

from __future__ import annotations

import asyncio
import json
import struct
from typing import Any

MAX_MESSAGE_BYTES = 8 * 1024 * 1024
_HEADER = struct.Struct(">I")


class WireError(Exception):
    """The peer sent something that is not a well-formed message."""


def encode(message: dict[str, Any]) -> bytes:
    try:
        body = json.dumps(message, separators=(",", ":"), allow_nan=False).encode()
    except RecursionError:
        raise WireError("the message nests too deeply to send") from None
    if len(body) > MAX_MESSAGE_BYTES:
        raise WireError(f"message of {len(body)} bytes is over the {MAX_MESSAGE_BYTES} limit")
    return _HEADER.pack(len(body)) + body


async def read(reader: asyncio.StreamReader) -> dict[str, Any]:
    header = await reader.readexactly(_HEADER.size)
    (size,) = _HEADER.unpack(header)
    if size > MAX_MESSAGE_BYTES:
        raise WireError(f"peer announced a {size}-byte message")
    body = await reader.readexactly(size)
    try:
        message = json.loads(body)
    except ValueError as exc:
        raise WireError(f"peer sent malformed JSON: {exc}") from None
    if not isinstance(message, dict) or not isinstance(message.get("op"), str):
        raise WireError("peer sent a message without an 'op'")
    return message
