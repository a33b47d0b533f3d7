"""Messages between the host and a sandbox process: length-prefixed JSON, nothing else.

JSON (never pickle) so that a compromised sandbox can send the host nothing but plain data.
"""

from __future__ import annotations

import asyncio
import struct
from typing import Any

from ._json import dumps, loads

MAX_MESSAGE_BYTES = 8 * 1024 * 1024
_HEADER = struct.Struct(">I")


class WireError(Exception):
    """The peer sent something that is not a well-formed message."""


def encode(message: dict[str, Any]) -> bytes:
    try:
        body = dumps(message).encode()
    except ValueError as exc:
        raise WireError(f"the message cannot be sent: {exc}") from None
    if len(body) > MAX_MESSAGE_BYTES:
        raise WireError(f"message of {len(body)} bytes is over the {MAX_MESSAGE_BYTES} limit")
    return _HEADER.pack(len(body)) + body


class Reader:
    """Messages from a byte stream: every complete message already received is returned
    without waiting (a step and its body's result usually arrive in one chunk)."""

    def __init__(self, stream: asyncio.StreamReader) -> None:
        self._stream = stream
        self._buffer = bytearray()

    async def read(self) -> dict[str, Any]:
        while True:
            message = self._take()
            if message is not None:
                return message
            chunk = await self._stream.read(1 << 16)
            if not chunk:
                raise asyncio.IncompleteReadError(bytes(self._buffer), None)
            self._buffer += chunk

    def _take(self) -> dict[str, Any] | None:
        buffer = self._buffer
        if len(buffer) < _HEADER.size:
            return None
        (size,) = _HEADER.unpack_from(buffer)
        if size > MAX_MESSAGE_BYTES:
            raise WireError(f"peer announced a {size}-byte message")
        end = _HEADER.size + size
        if len(buffer) < end:
            return None
        body = bytes(buffer[_HEADER.size:end])
        del buffer[:end]
        return decode(body)


def decode(body: bytes) -> dict[str, Any]:
    try:
        message = loads(body.decode())
    except ValueError as exc:
        raise WireError(f"peer sent malformed JSON: {exc}") from None
    if not isinstance(message, dict) or not isinstance(message.get("op"), str):
        raise WireError("peer sent a message without an 'op'")
    return message
