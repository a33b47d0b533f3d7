"""The sandbox process: runs one plan run at a time, reaching the host only by messages.

Started by :class:`sandbox.process.SandboxPool` as ``python -I -m sandbox._child``. It limits
itself (memory, file size, processes) before it reads any plan, keeps the protocol on a private
copy of stdout, and drives plan coroutines with a small scheduler of its own: every ``await`` in
a plan ends at a step call, which becomes a message to the host, so the process is idle exactly
when it waits for the host. Tool calls are synchronous round trips.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import select
import struct
import sys
import time
from collections.abc import Callable, Coroutine, Generator
from datetime import datetime
from typing import Any

from .fingerprint import inputs_fingerprint

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
        if "run" not in message:
            message = {**message, "run": self.run}
        body = json.dumps(message, separators=(",", ":"), allow_nan=False).encode()
        data = _HEADER.pack(len(body)) + body
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
                    body = bytes(buffer[_HEADER.size:_HEADER.size + size])
                    del buffer[:_HEADER.size + size]
                    message: dict[str, Any] = json.loads(body)
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
    if getattr(exc, "non_retryable", False) is True:
        info["non_retryable"] = True
    return info


# -- a tiny scheduler for plan coroutines ----------------------------------------------------
class Request:
    """Awaited by plan code: a message to the host whose reply resumes the awaiting task."""

    def __init__(self, message: dict[str, Any]) -> None:
        self.message = message

    def __await__(self) -> Generator[Request, Any, Any]:
        reply = yield self
        return reply


class Park:
    """Awaited after a message was sent without waiting: park until its reply arrives."""

    def __init__(self, call_id: int) -> None:
        self.call_id = call_id

    def __await__(self) -> Generator[Park, Any, Any]:
        reply = yield self
        return reply


class Gather:
    def __init__(self, awaitables: tuple[Any, ...]) -> None:
        self.awaitables = awaitables

    def __await__(self) -> Generator[Gather, Any, Any]:
        results = yield self
        return results


class Task:
    def __init__(self, coroutine: Coroutine[Any, Any, Any],
                 done: Callable[[bool, Any], None], run: int | None) -> None:
        self.coroutine = coroutine
        self.done = done
        self.run = run


class Scheduler:
    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self.waiting: dict[int, Task] = {}
        self.next_call = 0
        self.bodies: dict[int, Callable[[], Any]] = {}
        # Journal keys known at the start of the run (None: unknown). A step.do whose
        # (name, occurrence) is not among them runs its body at once and sends the result
        # with the call: one round trip instead of two.
        self.journaled: set[tuple[str, int]] | None = None
        # The host asked for each step body's inputs fingerprint (to reuse earlier results).
        self.fingerprints = False
        self.counts: dict[str, int] = {}
        self.current_run: int | None = None
        # The step whose body runs right now (tool calls are tagged with it), and each
        # registered body's step.
        self.active_step: tuple[str, int] | None = None
        self.body_steps: dict[int, tuple[str, int]] = {}

    def count(self, name: Any) -> int | None:
        if not isinstance(name, str):
            return None
        self.counts[name] = self.counts.get(name, 0) + 1
        return self.counts[name]

    @contextlib.contextmanager
    def running(self, step: tuple[str, int] | None) -> Generator[None, None, None]:
        previous, self.active_step = self.active_step, step
        try:
            yield
        finally:
            self.active_step = previous

    def new_call(self) -> int:
        self.next_call += 1
        return self.next_call

    def spawn(self, coroutine: Coroutine[Any, Any, Any],
              done: Callable[[bool, Any], None], run: int | None = None) -> None:
        self.resume(Task(coroutine, done, self.current_run if run is None else run), True, None)

    def resume(self, task: Task, ok: bool, value: Any) -> None:
        if task.run != self.current_run:
            # A coroutine of a finished run (say, a step.all sibling of a branch that failed
            # and ended the run) never runs again: it could otherwise reach the next run's host.
            with contextlib.suppress(BaseException):
                task.coroutine.close()
            return
        try:
            yielded = task.coroutine.send(value) if ok else task.coroutine.throw(value)
        except StopIteration as stop:
            task.done(True, stop.value)
            return
        except Exception as exc:
            task.done(False, exc)
            return
        if isinstance(yielded, Request):
            call_id = self.new_call()
            try:
                self.channel.send({**yielded.message, "call": call_id})
            except (TypeError, ValueError) as exc:
                self.resume(task, False, TypeError(f"step arguments must be plain data: {exc}"))
                return
            self.waiting[call_id] = task
        elif isinstance(yielded, Park):
            self.waiting[yielded.call_id] = task
        elif isinstance(yielded, Gather):
            self.gather(task, yielded.awaitables)
        else:
            self.resume(task, False, TypeError(
                "plans may only await step calls, step.all and their own async functions"
            ))

    def gather(self, parent: Task, awaitables: tuple[Any, ...]) -> None:
        results: list[Any] = [None] * len(awaitables)
        left = [len(awaitables)]
        failed: list[BaseException] = []
        if not awaitables:
            self.resume(parent, True, [])
            return

        def finisher(index: int) -> Callable[[bool, Any], None]:
            def finish(ok: bool, value: Any) -> None:
                left[0] -= 1
                if ok:
                    results[index] = value
                elif not failed:
                    failed.append(value)
                    self.resume(parent, False, value)
                if left[0] == 0 and not failed:
                    self.resume(parent, True, results)
            return finish

        for index, awaitable in enumerate(awaitables):
            self.spawn(_as_coroutine(awaitable), finisher(index), run=parent.run)

    def deliver(self, call_id: int, message: dict[str, Any]) -> None:
        task = self.waiting.pop(call_id, None)
        if task is None:
            return
        if "error" in message:
            self.resume(task, False, error_from(message["error"]))
        else:
            self.resume(task, True, message.get("value"))


async def _as_coroutine(awaitable: Any) -> Any:
    return await awaitable


class Tagged:
    """Awaits a step body's coroutine with the scheduler's active step set to that step
    whenever the body runs, so its tool calls say which step they belong to."""

    __slots__ = ("inner", "scheduler", "step")

    def __init__(self, inner: Any, step: tuple[str, int] | None, scheduler: Scheduler) -> None:
        self.inner = inner
        self.step = step
        self.scheduler = scheduler

    def __await__(self) -> Generator[Any, Any, Any]:
        inner = self.inner.__await__()
        value: Any = None
        error: BaseException | None = None
        while True:
            try:
                with self.scheduler.running(self.step):
                    yielded = inner.send(value) if error is None else inner.throw(error)
            except StopIteration as stop:
                return stop.value
            try:
                value, error = (yield yielded), None
            except GeneratorExit:
                inner.close()
                raise
            except BaseException as exc:  # thrown into the awaiting task: pass it on
                value, error = None, exc


# -- the objects a plan sees -----------------------------------------------------------------
class Event:
    __slots__ = ("instance_id", "payload", "timestamp", "workflow_name")

    def __init__(self, data: dict[str, Any]) -> None:
        self.payload = data.get("payload")
        self.timestamp = datetime.fromisoformat(data["timestamp"]) if data.get(
            "timestamp") else None
        self.instance_id = data.get("instance_id")
        self.workflow_name = data.get("workflow_name")


class StepProxy:
    """The plan's ``step``: each call is a message to the host, which runs the real step."""

    __slots__ = ("_scheduler",)

    def __init__(self, scheduler: Scheduler) -> None:
        self._scheduler = scheduler

    async def do(self, name: Any, fn: Callable[[], Any], *, retries: Any = None,
                 timeout: Any = None) -> Any:
        scheduler = self._scheduler
        count = scheduler.count(name)
        body = scheduler.new_call()
        scheduler.bodies[body] = fn
        if count is not None:
            scheduler.body_steps[body] = (name, count)
        message = {"op": "step", "method": "do", "name": name, "body": body,
                   "retries": retries, "timeout": timeout}
        if scheduler.fingerprints:
            message["inputs"] = _fingerprint(fn)
        try:
            if (scheduler.journaled is None or count is None
                    or (name, count) in scheduler.journaled):
                return await Request(message)
            return await self._speculate(message, fn, body)
        finally:
            scheduler.bodies.pop(body, None)
            scheduler.body_steps.pop(body, None)

    async def _speculate(self, message: dict[str, Any], fn: Callable[[], Any],
                         body: int) -> Any:
        scheduler = self._scheduler
        call = scheduler.new_call()
        try:
            scheduler.channel.send({**message, "call": call, "speculative": True})
        except (TypeError, ValueError) as exc:
            raise TypeError(f"step arguments must be plain data: {exc}") from None
        step = scheduler.body_steps.get(body)
        try:
            with scheduler.running(step):
                result = fn()
            if hasattr(result, "__await__"):
                result = await Tagged(result, step, scheduler)
            outcome: dict[str, Any] = {"value": result}
        except Exception as exc:
            outcome = {"error": error_info(exc)}
        try:
            scheduler.channel.send({"op": "body_result", "body": body, **outcome})
        except (TypeError, ValueError) as exc:  # a live object: only data crosses
            scheduler.channel.send({"op": "body_result", "body": body,
                                    "error": {"name": "TypeError", "message": str(exc)}})
        return await Park(call)

    async def sleep(self, name: Any, duration: Any) -> Any:
        self._scheduler.count(name)
        return await Request({"op": "step", "method": "sleep", "name": name,
                              "duration": duration})

    async def sleep_until(self, name: Any, when: Any) -> Any:
        self._scheduler.count(name)
        if isinstance(when, datetime):
            when = when.timestamp()
        return await Request({"op": "step", "method": "sleep_until", "name": name,
                              "when": when})

    async def wait_for_event(self, name: Any, *, type: Any,
                             timeout: Any = "24 hours") -> Any:
        self._scheduler.count(name)
        reply = await Request({"op": "step", "method": "wait_for_event", "name": name,
                               "type": type, "timeout": timeout})
        return StepEventView(reply)

    async def wait_for_approval(self, name: Any, *, prompt: Any, data: Any = None,
                                timeout: Any = "24 hours", on_timeout: Any = "reject") -> Any:
        self._scheduler.count(name)
        reply = await Request({"op": "step", "method": "wait_for_approval", "name": name,
                               "prompt": prompt, "data": data, "timeout": timeout,
                               "on_timeout": on_timeout})
        return DecisionView(reply)

    async def all(self, *awaitables: Any) -> Any:
        return await Gather(awaitables)


class StepEventView:
    __slots__ = ("payload", "timestamp", "type")

    def __init__(self, data: dict[str, Any]) -> None:
        self.type = data.get("type")
        self.payload = data.get("payload")
        self.timestamp = datetime.fromisoformat(data["timestamp"])


class DecisionView:
    """A person's decision on an approval gate, as a plan sees it."""

    __slots__ = ("approved", "at", "by", "comment", "data", "edited", "reason", "version")

    def __init__(self, data: dict[str, Any]) -> None:
        self.approved = data.get("approved") is True
        self.reason = data.get("reason")
        self.by = data.get("by")
        self.comment = data.get("comment")
        self.data = data.get("data")
        self.version = data.get("version")
        self.edited = data.get("edited") is True
        self.at = datetime.fromisoformat(data["at"]) if data.get("at") else None


def tool_caller(channel: Channel, scheduler: Scheduler) -> Callable[..., Any]:
    def call_tool(name: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
        call_id = scheduler.new_call()
        step = scheduler.active_step
        reply = channel.call(
            {"op": "tool", "call": call_id, "name": name, "args": args, "kwargs": kwargs,
             "step": list(step) if step is not None else None},
            call_id,
        )
        if "error" in reply:
            raise error_from(reply["error"])
        return reply.get("value")

    return call_tool


# -- the process ------------------------------------------------------------------------------
_BLOCKED_EVENTS = (
    "open", "socket.", "subprocess.", "os.system", "os.exec", "os.fork", "os.forkpty",
    "os.posix_spawn", "os.spawn", "os.kill", "os.remove", "os.rename", "os.mkdir", "os.rmdir",
    "os.chmod", "os.chown", "os.link", "os.symlink", "os.truncate", "os.putenv", "os.unsetenv",
    "shutil.", "ctypes.", "sys._getframe", "sys.settrace", "sys.setprofile", "code.__new__",
    "function.__new__", "object.__getattr__", "winreg.", "urllib.", "ftplib.", "smtplib.",
    "http.", "imaplib.", "poplib.", "telnetlib.", "webbrowser.", "pty.",
)


class SandboxViolation(RuntimeError):
    """Raised inside the sandbox process by the audit hook."""


# True only while the runtime itself reads a step body's code (never while plan code runs):
# the audit hook then lets attribute reads such as fn.__code__ through.
_READING_CODE = [False]


def _fingerprint(fn: Callable[..., Any]) -> str | None:
    _READING_CODE[0] = True
    try:
        return inputs_fingerprint(fn)
    finally:
        _READING_CODE[0] = False


def lock_down() -> None:
    """Defense in depth under the RestrictedPython policy: from here on this process may not
    open files or sockets, start processes, or import modules it has not imported already.
    Audit hooks cannot be removed once added."""
    import _strptime  # type: ignore[import-not-found]  # noqa: F401 - imported lazily by strptime

    loaded = frozenset(sys.modules)

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event == "import":
            if args and args[0] not in loaded:
                raise SandboxViolation(f"import of {args[0]!r} is not allowed in the sandbox")
        elif event.startswith(_BLOCKED_EVENTS) and not (
                _READING_CODE[0] and event == "object.__getattr__"):
            raise SandboxViolation(f"{event} is not allowed in the sandbox")

    sys.addaudithook(hook)


def limit_self(memory_bytes: int) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))  # no file may grow
    resource.setrlimit(resource.RLIMIT_NPROC, (0, 0)) if os.getuid() != 0 else None
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def main() -> None:
    protocol_out = os.dup(1)
    os.dup2(2, 1)  # anything printed by accident goes to stderr, not into the protocol
    sys.stdout = sys.stderr
    channel = Channel(0, protocol_out)
    hello = channel.receive()
    limit_self(int(hello.get("memory_bytes", 512 * 1024 * 1024)))
    workdir = hello.get("workdir")
    if workdir:
        os.chdir(workdir)
    from ._runtime import PrintLog
    from .plan import compile_plan  # imported after the limits: plan code never sees modules

    lock_down()

    scheduler = Scheduler(channel)
    plan: Any = None
    tools: dict[str, Any] = {}
    run_id: Any = None
    # print output is bounded per run: each run gets a fresh budget
    run_log = [PrintLog(lambda text: channel.send({"op": "print", "text": text}))]
    channel.send({"op": "ready", "pid": os.getpid()})
    while True:
        message = channel.receive()
        op = message.get("op")
        if op == "load":
            try:
                plan = compile_plan(message["source"], tools=message.get("tools"),
                                    allowed_imports=message.get("allowed_imports")
                                    or _default_imports())
                tools = _tool_stubs(message.get("tools") or [], channel, scheduler)
                channel.send({"op": "loaded"})
            except Exception as exc:
                channel.send({"op": "load_failed", "error": error_info(exc)})
        elif op == "start":
            run_id = int(message["run"])
            scheduler.waiting.clear()
            scheduler.current_run = channel.run = run_id
            # Fresh module globals for every run: nothing a run leaves in them reaches the next.
            runner = plan.load(tools=tools, print_sink=lambda text: run_log[0].write(text),
                               print_limit=None)
            scheduler.counts = {}
            scheduler.fingerprints = message.get("inputs") is True
            known = message.get("journaled")
            scheduler.journaled = None if known is None else {
                (str(name), int(count)) for name, count in known
            }
            run_log[0] = PrintLog(lambda text: channel.send({"op": "print", "text": text}))
            current = run_id

            def finished(ok: bool, value: Any, current: Any = current) -> None:
                # Close what the run left waiting (step.all siblings) while the run is still
                # the current one: their finally blocks run now, on this run's CPU budget,
                # never during the next run.
                for task in list(scheduler.waiting.values()):
                    with contextlib.suppress(BaseException):
                        task.coroutine.close()
                scheduler.waiting.clear()
                try:
                    if ok:
                        channel.send({"op": "done", "run": current, "value": value})
                        return
                except (TypeError, ValueError) as exc:  # a live object: only data crosses
                    ok, value = False, TypeError(f"the plan returned a value that is not "
                                                 f"plain data: {exc}")
                finally:
                    scheduler.current_run = channel.run = None
                channel.send({"op": "failed", "run": current, "error": error_info(value)})

            scheduler.spawn(
                _as_coroutine(runner(Event(message["event"]), StepProxy(scheduler))), finished
            )
        elif op == "reply":
            scheduler.deliver(int(message["call"]), message)
        elif op == "body":
            _run_body(channel, scheduler, message)
        elif op == "cancel":
            scheduler.current_run = channel.run = None
            for task in scheduler.waiting.values():
                with contextlib.suppress(BaseException):
                    task.coroutine.close()
            scheduler.waiting.clear()
            channel.send({"op": "cancelled", "run": message.get("run")})
        elif op == "exit":
            return


def _run_body(channel: Channel, scheduler: Scheduler, message: dict[str, Any]) -> None:
    body_id = int(message["body"])
    reply_to = int(message["call"])
    fn = scheduler.bodies.get(body_id)

    def finish(ok: bool, value: Any) -> None:
        out: dict[str, Any] = {"op": "body_result", "call": reply_to}
        if ok:
            out["value"] = value
        else:
            out["error"] = error_info(value)
        try:
            channel.send(out)
        except (TypeError, ValueError) as exc:  # a live object: only data crosses
            channel.send({"op": "body_result", "call": reply_to,
                          "error": {"name": "TypeError", "message": str(exc)}})

    if fn is None:
        finish(False, RuntimeError("unknown step body"))
        return
    step = scheduler.body_steps.get(body_id)
    try:
        with scheduler.running(step):
            result = fn()
    except Exception as exc:
        finish(False, exc)
        return
    if hasattr(result, "__await__"):
        scheduler.spawn(_as_coroutine(Tagged(result, step, scheduler)), finish)
    else:
        finish(True, result)


def _tool_stubs(names: list[str], channel: Channel, scheduler: Scheduler) -> dict[str, Any]:
    caller = tool_caller(channel, scheduler)

    def stub(name: str) -> Callable[..., Any]:
        def invoke(*args: Any, **kwargs: Any) -> Any:
            return caller(name, list(args), kwargs)
        invoke.sandbox_tool = name  # type: ignore[attr-defined]  # see fingerprint
        return invoke

    return {name: stub(name) for name in names}


def _default_imports() -> frozenset[str]:
    from .validate import DEFAULT_IMPORTS
    return DEFAULT_IMPORTS


if __name__ == "__main__":
    main()
