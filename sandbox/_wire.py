"""Messages between the host and a sandbox process: length-prefixed JSON, nothing else.

JSON (never pickle) so that a compromised sandbox can send the host nothing but plain data.
"""

from __future__ import annotations

import asyncio
import struct
from collections import deque
from collections.abc import Callable
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


class Messages:
    """Messages parsed from a byte stream as its chunks arrive (the sandbox's stdout).

    With a ``handler`` set, every complete message is handed to it at once, from the event
    loop's read callback: no reader task to wake per message. Without one, messages queue for
    :meth:`receive`. The end of the stream or malformed data ends it: ``handler_failed`` is
    called, or ``receive`` raises (:class:`asyncio.IncompleteReadError`, :class:`WireError`).
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._queue: deque[dict[str, Any]] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._ended: BaseException | None = None
        self.handler: Callable[[dict[str, Any]], None] | None = None
        self.handler_failed: Callable[[BaseException], None] | None = None

    def take_handler(self, handler: Callable[[dict[str, Any]], None],
                     failed: Callable[[BaseException], None]) -> None:
        """Hand every message from now on to ``handler``; anything queued is dropped (left
        over from an earlier run)."""
        self._queue.clear()
        self.handler, self.handler_failed = handler, failed
        if self._ended is not None:
            failed(self._ended)

    def release_handler(self) -> None:
        self.handler = self.handler_failed = None

    def feed(self, data: bytes) -> None:
        if self._ended is not None:
            return
        buffer = self._buffer
        buffer += data
        start = 0
        try:
            while len(buffer) - start >= _HEADER.size:
                (size,) = _HEADER.unpack_from(buffer, start)
                if size > MAX_MESSAGE_BYTES:
                    raise WireError(f"peer announced a {size}-byte message")
                end = start + _HEADER.size + size
                if len(buffer) < end:
                    break
                message = decode(bytes(buffer[start + _HEADER.size:end]))
                start = end
                if self.handler is not None:
                    self.handler(message)
                else:
                    self._queue.append(message)
                    self._wake()
        except WireError as exc:
            self.end(exc)
        finally:
            del buffer[:start]

    def end(self, exc: BaseException | None = None) -> None:
        """The stream ended (``exc``: why, if not a plain end of file)."""
        if self._ended is None:
            self._ended = exc or asyncio.IncompleteReadError(bytes(self._buffer), None)
            if self.handler_failed is not None:
                self.handler_failed(self._ended)
            self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def receive(self) -> dict[str, Any]:
        while not self._queue:
            if self._ended is not None:
                raise self._ended
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._queue.popleft()


def decode(body: bytes) -> dict[str, Any]:
    try:
        message = loads(body.decode())
    except ValueError as exc:
        raise WireError(f"peer sent malformed JSON: {exc}") from None
    if not isinstance(message, dict) or not isinstance(message.get("op"), str):
        raise WireError("peer sent a message without an 'op'")
    return message
