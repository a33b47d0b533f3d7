"""The child's side of the wire: length-prefixed JSON messages, and the errors that
cross it."""

from __future__ import annotations

import os
import select
import struct
import time
from typing import Any

from ._json import dumps, loads

_HEADER = struct.Struct(">I")


# -- blocking message I/O -------------------------------------------------------------------
# After sending, the host usually answers within a few hundred microseconds; polling for that
# long saves the wake-up of a blocked process (tens of microseconds on another core) per reply.
SPIN_SECONDS = 0.0003


class Channel:
    def __init__(self, read_fd: int, write_fd: int) -> None:
        self._read_fd = read_fd
        os.set_blocking(read_fd, False)
        self._buffer = bytearray()
        self._write_fd = write_fd
        self.backlog: list[dict[str, Any]] = []
        # Every message carries the run it belongs to, so that the host drops anything a
        # finished run might still try to say (see Scheduler.resume).
        self.run: int | None = None

    def send(self, message: dict[str, Any]) -> None:
        self.send_text(self.encode(message))

    def encode(self, message: dict[str, Any]) -> str:
        """The message as JSON text, tagged with the current run."""
        if "run" not in message:
            message["run"] = self.run  # messages are built for sending: tag in place
        return dumps(message)

    def send_text(self, text: str) -> None:
        body = text.encode()
        self._write(_HEADER.pack(len(body)) + body)

    def _write(self, data: bytes) -> None:
        while data:
            data = data[os.write(self._write_fd, data):]

    def receive(self) -> dict[str, Any]:
        if self.backlog:
            return self.backlog.pop(0)
        return self.receive_fresh()

    def call(self, request: dict[str, Any], call_id: int) -> dict[str, Any]:
        """Send and block until the reply to ``call_id``; keep other messages for later."""
        self.send(request)
        while True:
            message = self.receive_fresh()
            if message.get("op") == "reply" and message.get("call") == call_id:
                return message
            self.backlog.append(message)

    def receive_fresh(self) -> dict[str, Any]:
        spin_until = time.perf_counter() + SPIN_SECONDS
        buffer = self._buffer
        while True:
            if len(buffer) >= _HEADER.size:
                (size,) = _HEADER.unpack_from(buffer)
                if len(buffer) >= _HEADER.size + size:
                    body = buffer[_HEADER.size:_HEADER.size + size].decode()
                    del buffer[:_HEADER.size + size]
                    message: dict[str, Any] = loads(body)
                    return message
            try:
                chunk = os.read(self._read_fd, 1 << 16)
            except BlockingIOError:
                if time.perf_counter() > spin_until:
                    select.select([self._read_fd], [], [])
                continue
            if not chunk:
                raise SystemExit(0)  # the host closed the pipe
            buffer.extend(chunk)


# -- errors that cross the boundary ---------------------------------------------------------
_BUILTIN_ERRORS: dict[str, type[Exception]] = {
    cls.__name__: cls for cls in (
        ArithmeticError, AssertionError, AttributeError, Exception, IndexError, KeyError,
        LookupError, NameError, NotImplementedError, OverflowError, RuntimeError,
        TimeoutError, TypeError, ValueError, ZeroDivisionError,
    )
}
_MADE: dict[str, type[Exception]] = {}


def error_from(info: dict[str, Any]) -> Exception:
    """An exception for the plan with the host error's class name and message."""
    name = str(info.get("name", "Exception"))
    message = str(info.get("message", ""))
    if name in _BUILTIN_ERRORS:
        return _BUILTIN_ERRORS[name](message)
    if name not in _MADE:
        base = TimeoutError if name.endswith("TimeoutError") else Exception
        _MADE[name] = type(name if name.isidentifier() else "StepError", (base,), {})
    error = _MADE[name](message)
    if info.get("non_retryable") is True:
        error.non_retryable = True  # type: ignore[attr-defined]
    return error


def error_info(exc: BaseException) -> dict[str, Any]:
    info: dict[str, Any] = {"name": type(exc).__name__, "message": str(exc)}
    if type(exc) is SystemError and "without setting an exception" in str(exc):
        # Under the sandbox's address-space limit a C function of the interpreter can fail
        # an allocation and return no exception (a deque filled from an endless iterator
        # does): the plan ran out of memory, and is told so.
        info = {"name": "MemoryError",
                "message": f"the plan ran out of memory (the interpreter reported: {exc})"}
    if getattr(exc, "non_retryable", False) is True:
        info["non_retryable"] = True
    return info
