"""The host's side of a sandbox process: starting it, its pipes, reading its messages as they
arrive, and keeping the event loop awake for its answers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sys
import weakref
from typing import Any

from . import _wire

_CLK_TCK = os.sysconf("SC_CLK_TCK")


class KeepAwake:
    """Keeps an event loop polling (never blocking) for a moment after a message to a
    sandbox, whose answer usually comes back within tens of microseconds: a loop that went to
    sleep meanwhile pays the wake-up of its core, ~100 µs on a virtual machine, more than the
    whole round trip otherwise. A callback that reschedules itself keeps the loop's selector
    at timeout zero; other tasks and I/O run as usual in between."""

    SECONDS = 0.0005

    def __init__(self) -> None:
        self._until = 0.0
        self._ticking = False

    def extend(self, loop: asyncio.AbstractEventLoop) -> None:
        self._until = loop.time() + self.SECONDS
        if not self._ticking:
            self._ticking = True
            loop.call_soon(self._tick, loop)

    def _tick(self, loop: asyncio.AbstractEventLoop) -> None:
        if loop.time() < self._until:
            loop.call_soon(self._tick, loop)
        else:
            self._ticking = False


# One per loop (holding no reference to it): a loop that ends takes its ticker along.
AWAKE: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, KeepAwake] = (
    weakref.WeakKeyDictionary())


def keep_awake() -> None:
    loop = asyncio.get_running_loop()
    awake = AWAKE.get(loop)
    if awake is None:
        awake = AWAKE[loop] = KeepAwake()
    awake.extend(loop)


class Output(asyncio.Protocol):
    """The child's stdout, read straight from the loop's read callback into messages (the
    subprocess transport would hand each chunk over through one more loop turn)."""

    def __init__(self, messages: _wire.Messages) -> None:
        self.messages = messages

    def data_received(self, data: bytes) -> None:
        self.messages.feed(data)

    def eof_received(self) -> bool:
        self.messages.end()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.messages.end(exc)


def child_command() -> list[str]:
    return [sys.executable, "-I", "-m", "sandbox._child"]


async def start_child(
    workdir: str,
) -> tuple[asyncio.subprocess.Process, _wire.Messages, asyncio.BaseTransport]:
    read_fd, write_fd = os.pipe()
    try:
        proc = await asyncio.create_subprocess_exec(
            *child_command(), stdin=asyncio.subprocess.PIPE, stdout=write_fd,
            stderr=asyncio.subprocess.DEVNULL, cwd=workdir,
        )
    except BaseException:
        os.close(read_fd)
        raise
    finally:
        os.close(write_fd)  # the child holds the only write end: its exit is our EOF
    messages = _wire.Messages()
    pipe = os.fdopen(read_fd, "rb", buffering=0)
    try:
        output, _ = await asyncio.get_running_loop().connect_read_pipe(
            lambda: Output(messages), pipe)
    except BaseException:
        pipe.close()
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        raise
    return proc, messages, output


class Process:
    def __init__(self, proc: asyncio.subprocess.Process, messages: _wire.Messages,
                 output: asyncio.BaseTransport, workdir: str) -> None:
        self.proc = proc
        self.output = output
        self.workdir = workdir
        self.plan_sha: str | None = None
        assert proc.stdin is not None
        self.messages = messages
        self.writer = proc.stdin

    async def send(self, message: dict[str, Any]) -> None:
        writer = self.writer
        writer.write(_wire.encode(message))
        keep_awake()
        transport = writer.transport
        if transport.get_write_buffer_size() or transport.is_closing():
            await writer.drain()  # (a message that did not fit the pipe at once)

    async def receive(self) -> dict[str, Any]:
        return await self.messages.receive()

    def cpu_seconds(self) -> float:
        try:
            with open(f"/proc/{self.proc.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / _CLK_TCK
        except (OSError, IndexError, ValueError):
            return 0.0

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        self.output.close()
        shutil.rmtree(self.workdir, ignore_errors=True)
