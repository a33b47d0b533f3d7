"""The host side of one sandboxed run: it answers the plan's step and tool calls (with the
real ``step`` and tools) until the plan finishes, fails, or goes over its limits."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from . import _wire
from ._child_channel import error_info
from ._host_errors import SandboxCrashed, SandboxError, SandboxLimitError, plan_error
from ._host_pipes import Process
from .calling import step_scope
from .eager import spawn


@dataclass(frozen=True)
class Limits:
    memory_bytes: int = 512 * 1024 * 1024
    cpu_seconds: float = 10.0  # per run, checked every ``check_every`` seconds
    check_every: float = 0.05
    # A step without an explicit timeout runs its first attempt in the child, ahead of the
    # host, under no deadline of the engine's: its tool calls are stopped this long after the
    # first of them (the engine's default step timeout, 10 minutes), as an in-process body
    # would be stopped.
    ahead_step_timeout: float = 600.0


def _event_data(event: Any) -> dict[str, Any]:
    timestamp = getattr(event, "timestamp", None)
    return {
        "payload": getattr(event, "payload", None),
        "timestamp": timestamp.isoformat() if isinstance(timestamp, datetime) else None,
        "instance_id": getattr(event, "instance_id", None),
        "workflow_name": getattr(event, "workflow_name", None),
    }


_RUN_IDS = itertools.count(1)
# How long the end of a run waits for the child to drain (see _end_when_drained).
DRAIN_SECONDS = 1.0


class _StreamEnded(Exception):
    """The sandbox's output ended or broke (``cause``) before the run finished."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(repr(cause))
        self.cause = cause


class _Session:
    """The host side of one run: answers the plan's messages until it finishes."""

    def __init__(self, process: Process, step: Any, tools: Mapping[str, Callable[..., Any]],
                 print_sink: Callable[[str], None] | None, limits: Limits) -> None:
        self.process = process
        self.step = step
        self.tools = tools
        self.print_sink = print_sink
        self.limits = limits
        self.bodies: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.calls = itertools.count(1)
        # Tool calls being served, by the step they come from; calls already answered
        # because their step was abandoned (their late results are dropped).
        self.tool_calls: dict[tuple[str, int] | None, dict[Any, asyncio.Task[Any]]] = {}
        self.answered: set[Any] = set()
        # Body calls (attempts) given up on: tool calls they make from now on are refused.
        self.abandoned: set[int] = set()
        # Steps run ahead in the child: when their tool calls must stop (loop time).
        self.ahead_deadlines: dict[tuple[str, int], float] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.ending: BaseException | None = None
        # A step ended the run (the engine hibernates it): the end waits until the child
        # has said everything it sent before ('drained'), or DRAIN_SECONDS.
        self.held: BaseException | None = None
        self.drains = 0  # drain messages sent and not yet answered
        self.finished: asyncio.Future[Any] | None = None  # the run's outcome
        self.reusable = False
        self.id = next(_RUN_IDS)

    async def run(self, event: Any) -> Any:
        start: dict[str, Any] = {"op": "start", "run": self.id, "event": _event_data(event)}
        journaled = getattr(self.step, "journaled", None)
        if callable(journaled):  # lets the child run new steps' bodies without asking first
            start["journaled"] = [list(key) for key in journaled()]
        if getattr(self.step, "wants_inputs", False) is True:
            start["inputs"] = True  # the child sends each body's inputs_fingerprint
        messages = self.process.messages
        self.finished = asyncio.get_running_loop().create_future()
        # Every message is handled as it arrives, from the loop's read callback, in (a copy
        # of) this run's context, as a task of the run would be: the step and tool calls it
        # starts see the context variables of the run (a planner's gates read theirs).
        context = contextvars.copy_context()

        def handle(message: dict[str, Any]) -> None:
            context.run(self._on_message, message)

        messages.take_handler(handle, self._on_end)
        try:
            return await self._serve(start)
        finally:
            messages.release_handler()
            if self.finished.done() and not self.finished.cancelled():
                self.finished.exception()  # (an outcome nobody awaited is not an error)

    async def _serve(self, start: dict[str, Any]) -> Any:
        assert self.finished is not None
        try:
            await self.process.send(start)
        except (TypeError, ValueError, RecursionError, _wire.WireError) as exc:
            self.reusable = True  # nothing reached the child
            raise SandboxError(f"the event cannot be sent to the sandbox: {exc}") from None
        except (ConnectionError, BrokenPipeError) as exc:
            raise self._died(exc) from None
        watchdog = asyncio.create_task(self._watch(self.process.cpu_seconds()))
        try:
            return await self.finished
        except _StreamEnded as ended:
            raise self._died(ended.cause) from None
        except asyncio.CancelledError:
            if self.ending is None:  # the engine cancelled us (terminate, shutdown)
                raise
            self.process.messages.release_handler()  # the cancel's answer is read below
            await self._cancel_child()
            raise self.ending from None
        finally:
            watchdog.cancel()
            for task in self.tasks:
                task.cancel()

    def _on_message(self, message: dict[str, Any]) -> None:
        finished = self.finished
        if finished is None or finished.done():
            return  # the run is over: nothing more is served
        try:
            done, value = self._dispatch(message)
        except Exception as exc:  # the plan's error, or a broken protocol
            if isinstance(exc, StopIteration):  # a future refuses it, as a coroutine does
                exc = RuntimeError(f"the plan raised StopIteration: {exc}")
            finished.set_exception(exc)
            return
        if done:
            self.reusable = True
            finished.set_result(value)

    def _on_end(self, cause: BaseException) -> None:
        if self.finished is not None and not self.finished.done():
            self.finished.set_exception(_StreamEnded(cause))

    def _end(self, exc: BaseException) -> None:
        """End the run with ``exc`` (a limit, or the engine suspending or stopping it)."""
        if self.ending is None:
            self.ending = exc
            if self.finished is not None and not self.finished.done():
                self.finished.cancel()

    async def _end_when_drained(self, exc: BaseException) -> None:
        """End the run with ``exc`` once the child has said all it sent before: branches of
        a ``step.all`` beside the one that hibernates may already have asked for their own
        sleeps and waits, which are then journaled with the same hibernation."""
        if self.held is not None or self.ending is not None:
            return
        self.held = exc
        timer = asyncio.get_running_loop().call_later(DRAIN_SECONDS, self._end, exc)
        if self.finished is not None:
            self.finished.add_done_callback(lambda _: timer.cancel())
        await self._drain()

    async def _drain(self) -> None:
        self.drains += 1
        try:
            await self.process.send({"op": "drain"})
        except (ConnectionError, BrokenPipeError):
            assert self.held is not None
            self._end(self.held)

    def _maybe_end_held(self, _: Any = None) -> None:
        """A held run ends once every drain is answered and no step or tool call is still
        being served (one may yet reply, and the child go on to further waits)."""
        if (self.held is not None and self.drains <= 0
                and all(task.done() for task in self.tasks)):
            self._end(self.held)

    def _died(self, exc: BaseException) -> BaseException:
        if self.ending is not None:
            return self.ending
        code = self.process.proc.returncode
        return SandboxCrashed(f"the sandbox process died ({type(exc).__name__}, exit {code}); "
                              "the plan may have exhausted its memory")

    async def _watch(self, start: float) -> None:
        while True:
            await asyncio.sleep(self.limits.check_every)
            used = self.process.cpu_seconds() - start
            if used > self.limits.cpu_seconds:
                self.process.kill()
                self._end(SandboxLimitError(
                    f"the plan used more than {self.limits.cpu_seconds:g} s of CPU time in "
                    "one run; look for an endless loop or an explosive computation"
                ))
                return

    def _dispatch(self, message: dict[str, Any]) -> tuple[bool, Any]:
        try:
            outcome = self._dispatch_checked(message)
        except (KeyError, ValueError, TypeError, AttributeError) as exc:
            raise SandboxCrashed(f"the sandbox broke the protocol: {exc!r}"[:500]) from None
        if isinstance(outcome, BaseException):
            raise outcome  # the plan's own error: not a protocol problem
        return outcome

    def _dispatch_checked(self, message: dict[str, Any]) -> tuple[bool, Any] | Exception:
        if message.get("run") != self.id:
            return False, None  # left over from an earlier run in this process: never served
        op = message["op"]
        has_call = isinstance(message.get("call"), int)
        if (op in ("step", "tool") and not has_call) or (
            op == "body_result" and not (has_call or isinstance(message.get("body"), int))
        ):
            raise SandboxCrashed(f"the sandbox broke the protocol: {op!r} without a call id")
        if message.get("speculative") and not isinstance(message.get("outcome"), dict):
            # a first attempt run in the child travels with its step (see StepProxy.do)
            raise SandboxCrashed("the sandbox broke the protocol: a speculative step "
                                 "without its outcome")
        if op == "done":
            return True, message.get("value")
        if op == "failed":
            error = message.get("error")
            if not isinstance(error, dict):
                raise TypeError("'failed' without an error object")
            return plan_error(error)
        if op == "drained":
            self.drains -= 1
            self._maybe_end_held()
            return False, None
        if op == "print":
            text = str(message.get("text", ""))
            if self.print_sink is not None:
                self.print_sink(text)
            log = getattr(self.step, "log", None)  # an agentflow step keeps the instance's log
            if callable(log):
                log(text)
        elif op == "body_result":
            # (one naming a body rather than a call answers nothing: first attempts travel
            # with their steps)
            future = self.bodies.pop(message["call"], None) if has_call else None
            if future is not None and not future.done():
                future.set_result(message)
        elif op in ("step", "tool"):
            # A step is served at once, here in the read callback: one that answers without
            # waiting replies without a turn of the loop (a third of a round trip). A tool is
            # the application's code, which may need a current task (asyncio.timeout does).
            task = (spawn(self._step(message)) if op == "step"
                    else asyncio.create_task(self._tool(message)))
            if task is not None:
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)
                task.add_done_callback(self._maybe_end_held)
        return False, None

    async def _reply(self, call: Any, **fields: Any) -> None:
        try:
            await self.process.send({"op": "reply", "call": call, **fields})
        except (TypeError, ValueError, RecursionError, _wire.WireError) as exc:
            await self.process.send({"op": "reply", "call": call,
                                     "error": {"name": "TypeError", "message": str(exc)}})
        if self.held is not None and self.ending is None:
            await self._drain()  # the child goes on from this reply: drain that too

    async def _tool(self, message: dict[str, Any]) -> None:
        name = message.get("name")
        fn = self.tools.get(name) if isinstance(name, str) else None
        call, step = message["call"], _step_key(message.get("step"))
        attempt = _attempt_of(message.get("step"))
        deadline = None if attempt is not None or step is None else self._ahead_deadline(step)
        refused = self._refusal(step, attempt, deadline, name)
        if refused is not None:
            await self._reply(call, error=refused)
            return
        serving = self.tool_calls.setdefault(step, {})
        task = asyncio.current_task()
        assert task is not None, "tools are served from tasks of their own"
        serving[call] = task
        scope: asyncio.Timeout | None = None
        try:
            if fn is None:
                raise AttributeError(f"no tool named {name!r} is granted")
            with step_scope(step):
                result = fn(*(message.get("args") or []), **(message.get("kwargs") or {}))
                if inspect.isawaitable(result):
                    async with asyncio.timeout_at(deadline) as scope:
                        result = await result
            reply: dict[str, Any] = {"value": _plain(result)}
        except Exception as exc:
            expired = scope is not None and scope.expired()
            reply = {"error": self._ran_past(step, name) if expired else error_info(exc)}
        finally:
            serving.pop(call, None)
        if call in self.answered:
            self.answered.discard(call)  # its step gave up on it: the child has moved on
            return
        await self._reply(call, **reply)

    def _ahead_deadline(self, step: tuple[str, int]) -> float:
        """When the tool calls of a step the child runs ahead must stop (loop time): the
        default step timeout after the first of them."""
        return self.ahead_deadlines.setdefault(
            step, asyncio.get_running_loop().time() + self.limits.ahead_step_timeout)

    def _refusal(self, step: tuple[str, int] | None, attempt: int | None,
                 deadline: float | None, tool: Any) -> dict[str, str] | None:
        """The error a tool call gets instead of running, if it may not run."""
        if attempt in self.abandoned:
            # Made by an attempt that timed out (its body went on, say after catching the
            # error of a tool call that was stopped): an in-process body would have been
            # cancelled at this await, so the tool does not run.
            return {"name": "TimeoutError",
                    "message": f"step {step[0] if step else '?'!r}: this attempt timed out; "
                               "its tool calls no longer run"}
        if deadline is not None and deadline <= asyncio.get_running_loop().time():
            return self._ran_past(step, tool)
        return None

    def _ran_past(self, step: tuple[str, int] | None, tool: Any) -> dict[str, str]:
        return {"name": "TimeoutError", "message": (
            f"step {step[0] if step else '?'!r} ran past its "
            f"{self.limits.ahead_step_timeout:g}-second timeout; tool {tool!r} was stopped")}

    async def _abandon_tools(self, step: tuple[str, int] | None, why: str) -> None:
        """The host gave up on ``step``'s body (its attempt timed out): stop the tool calls it
        is blocked in, as an in-process body's would stop, and answer them, so the child can
        unwind it (a retry must not run beside them)."""
        for call, task in list(self.tool_calls.get(step, {}).items()):
            self.answered.add(call)
            task.cancel()
            await self._reply(call, error={"name": "TimeoutError", "message": why})

    async def _step(self, message: dict[str, Any]) -> None:
        method = message.get("method")
        try:
            value = await self._perform(method, message)
        except Exception as exc:
            await self._reply(message["call"], error=error_info(exc))
        except asyncio.CancelledError as exc:
            self._end(exc)
        except BaseException as exc:  # the engine suspends or stops the run
            await self._end_when_drained(exc)
        else:
            await self._reply(message["call"], value=value)

    async def _perform(self, method: Any, message: dict[str, Any]) -> Any:
        name = message.get("name")
        if method == "do":
            body = int(message["body"])
            # The child ran a new step's first attempt and sent its outcome with the step.
            first = message.get("outcome") if message.get("speculative") else None

            async def run_body() -> Any:
                nonlocal first
                if first is not None:
                    result, first = first, None
                else:  # the host runs the body (under the step's deadline) in the child
                    call = next(self.calls)
                    future = asyncio.get_running_loop().create_future()
                    self.bodies[call] = future
                    await self.process.send({"op": "body", "body": body, "call": call})
                    try:
                        result = await future
                    except asyncio.CancelledError:
                        self.bodies.pop(call, None)
                        self.abandoned.add(call)
                        await self._abandon_tools(
                            _step_key([name, message.get("count")]),
                            f"step {name!r} ended (timed out) before this tool call returned")
                        raise
                if "error" in result:
                    raise plan_error(result["error"])
                return result.get("value")

            inputs = message.get("inputs")
            if isinstance(inputs, str) and len(inputs) == 64:
                run_body.inputs_fingerprint = inputs  # type: ignore[attr-defined]
            kwargs = {k: message[k] for k in ("retries", "timeout") if message.get(k) is not None}
            return await self.step.do(name, run_body, **kwargs)
        if method == "sleep":
            return await self.step.sleep(name, message.get("duration"))
        if method == "sleep_until":
            return await self.step.sleep_until(name, message.get("when"))
        if method == "wait_for_event":
            event = await self.step.wait_for_event(
                name, type=message.get("type"), timeout=message.get("timeout", "24 hours")
            )
            return {"type": event.type, "payload": event.payload,
                    "timestamp": event.timestamp.isoformat()}
        if method == "wait_for_approval":
            decision = await self.step.wait_for_approval(
                name, prompt=message.get("prompt"), data=message.get("data"),
                timeout=message.get("timeout", "24 hours"),
                on_timeout=message.get("on_timeout", "reject"),
            )
            at = getattr(decision, "at", None)
            return {k: getattr(decision, k, None) for k in (
                "approved", "reason", "by", "comment", "data", "version", "edited",
            )} | {"at": at.isoformat() if isinstance(at, datetime) else None}
        raise AttributeError(f"step has no method {method!r}")

    async def _cancel_child(self) -> None:
        """After the engine ended the run, stop the plan in the child and keep the process
        only if it acknowledges in time."""
        if self.process.proc.returncode is not None:
            return
        with contextlib.suppress(Exception):
            await self.process.send({"op": "cancel", "run": self.id})
            async with asyncio.timeout(1.0):
                while (await self.process.receive()).get("op") != "cancelled":
                    pass
                self.reusable = True


def _step_key(value: Any) -> tuple[str, int] | None:
    """The step a tool call says it comes from; None when absent or malformed."""
    if (isinstance(value, list) and len(value) in (2, 3) and isinstance(value[0], str)
            and isinstance(value[1], int) and not isinstance(value[1], bool)):
        return value[0], value[1]
    return None


def _attempt_of(value: Any) -> int | None:
    """The host's body call a tool call says it comes from (the third item of its step),
    or None (a body the child ran ahead, or none)."""
    if isinstance(value, list) and len(value) == 3 and type(value[2]) is int:
        return value[2]
    return None


def _plain(value: Any) -> Any:
    dump = getattr(value, "model_dump", None)
    return dump(mode="json") if callable(dump) else value
