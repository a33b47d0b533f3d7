"""A tiny scheduler for plan coroutines in the sandbox process: every await of a plan ends
at a step call, a message to the host; replies resume the coroutine that asked."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Coroutine, Generator
from typing import Any

from ._child_channel import Channel, error_from


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
        # The step whose body runs right now (tool calls are tagged with it: its name,
        # occurrence and, when the host asked for the body, the host's call for that
        # attempt), and each registered body's step.
        self.active_step: tuple[Any, ...] | None = None
        self.body_steps: dict[int, tuple[str, int]] = {}

    def count(self, name: Any) -> int | None:
        if not isinstance(name, str):
            return None
        self.counts[name] = self.counts.get(name, 0) + 1
        return self.counts[name]

    @contextlib.contextmanager
    def running(self, step: tuple[Any, ...] | None) -> Generator[None, None, None]:
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

    def __init__(self, inner: Any, step: tuple[Any, ...] | None, scheduler: Scheduler) -> None:
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
