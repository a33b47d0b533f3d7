"""The ``step`` object a workflow's ``run`` receives: durable steps, sleeps and event waits."""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from types import CoroutineType, FunctionType
from typing import Any, TypeVar

from . import _validate as validate
from . import approvals
from ._codec import decode, encode, round_trip
from ._control import Stop, Suspend
from ._deadlines import DeadlineExceeded
from ._eager import Resumed
from ._errors_journal import describe, rebuild
from .approvals import Decision
from .errors import InvalidArgumentError, NonRetryableError, PayloadError, WorkflowTimeoutError
from .records import Duration, Retries, StepConfig, StepContext, StepEvent, _utc
from .run_state import Attempt, RunState
from .storage import StepRecord

T = TypeVar("T")

DEFAULT_RETRIES = Retries()
DEFAULT_TIMEOUT = 600.0
_BACKOFFS = ("constant", "linear", "exponential")
_NOT_RETRIED = (NonRetryableError, PayloadError)
_DEFAULT_CONFIG = StepConfig(DEFAULT_RETRIES, DEFAULT_TIMEOUT)


class Step:
    """Durable operations for workflow code. One ``Step`` serves one run of one instance."""

    __slots__ = ("_run",)

    def __init__(self, run: RunState) -> None:
        self._run = run

    # -- step.do ----------------------------------------------------------------------------
    async def do(
        self,
        name: str,
        fn: Callable[..., Any],
        *,
        retries: Retries | Mapping[str, Any] | None = None,
        timeout: Duration | None = None,
    ) -> Any:
        """Run ``fn`` once, durably: its JSON result is journaled under (name, occurrence) and
        returned without running again on every replay. Failures are retried per ``retries``."""
        name = validate.step_name(name)
        run = self._run
        count = run.next_count(name)
        record = run.journal.get((name, count))
        if record is not None:  # replay: a finished step's arguments were checked when it ran
            if record.state == "completed":
                return decode(record.result)
            if record.state == "errored":
                raise _journaled_error(record)
        if not callable(fn):
            raise InvalidArgumentError(
                f"step {name!r}: fn must be callable, got {type(fn).__name__}; "
                "pass a function or lambda, e.g. step.do(name, lambda: fetch(url))"
            )
        config = _DEFAULT_CONFIG if retries is None and timeout is None else StepConfig(
            retries=_check_retries(name, retries),
            timeout=DEFAULT_TIMEOUT if timeout is None
            else validate.duration(timeout, what=f"step {name!r} timeout"),
        )
        run.check_active()
        return await self._execute(name, count, fn, config, record)

    async def _execute(
        self, name: str, count: int, fn: Callable[..., Any], config: StepConfig,
        record: StepRecord | None,
    ) -> Any:
        run = self._run
        clock = run.clock
        attempt = record.attempts if record is not None else 0
        at = clock.now()
        started_at = record.started_at if record is not None else at
        if record is not None and record.wake_at is not None and record.wake_at > at:
            raise run.suspend_until(record.wake_at)
        first = record is None
        takes_context = _takes_context(fn)
        while True:
            attempt += 1
            # (a body without a parameter, the usual lambda, gets no context built)
            context = StepContext(name, count, attempt, config) if takes_context else None
            current = Attempt(name, count, attempt, at, first)
            first = False
            running = False
            try:
                finished, value = _begin(fn, context)
                if not finished:
                    # It waits: from now on the run's flush and settle can see it running
                    # (while it ran without waiting, nothing else could).
                    run.attempt_running(current)
                    running = True
                    value = await _finish(value, current, run, config.timeout)
                text = encode(value, what=f"result of step {name!r}")
            except (Suspend, Stop, asyncio.CancelledError):
                run.attempt_abandoned(current)
                raise
            except Exception as exc:
                error = exc
            else:
                now = clock.now()
                run.attempt_ended(current, "step.completed", at=now)
                await run.save(StepRecord(  # (positional: the fastest way to build one)
                    name, count, "do", "completed", started_at, text, None, None, None, attempt,
                    None, None, now,
                ))
                return round_trip(value, text)
            finally:
                if running:  # after its record is saved: settle() waits for that too
                    run.body_finished()
            if context is None:
                context = StepContext(name, count, attempt, config)
            await self._failed(current, started_at, config.retries, context, error)
            at = clock.now()

    async def _failed(
        self, current: Attempt, started_at: float, retries: Retries, context: StepContext,
        error: Exception,
    ) -> None:
        """Journal a failed attempt: raise when retries are spent, suspend for a later retry,
        or return to retry at once."""
        run = self._run
        name, count, attempt = current.name, current.count, current.attempt
        err_name, message, where = describe(error)
        info = {"name": err_name, "message": message}
        if (isinstance(error, _NOT_RETRIED) or getattr(error, "non_retryable", False) is True
                or attempt > retries.limit):
            run.attempt_ended(current, "attempt.failed", error=info, retry_in=None)
            run.history("step.errored", name, count, attempt, error=info)
            await run.save(StepRecord(
                name, count, "do", "errored", started_at, error_name=err_name,
                error_message=message, error_detail=where, attempts=attempt,
                finished_at=run.clock.now(),
            ))
            raise error
        delay = _retry_delay(retries, context, error, attempt)
        run.attempt_ended(current, "attempt.failed", error=info, retry_in=delay)
        if delay <= 0:
            return
        wake_at = run.clock.now() + delay
        # Journaled with the suspension: the instance hibernates right after.
        run.defer(StepRecord(
            name, count, "do", "retrying", started_at, error_name=err_name,
            error_message=message, error_detail=where, attempts=attempt, wake_at=wake_at,
        ))
        raise run.suspend_until(wake_at)

    # -- sleeping ---------------------------------------------------------------------------
    async def sleep(self, name: str, duration: Duration) -> None:
        """Hibernate for ``duration`` (seconds, or a string like '10 minutes')."""
        name = validate.step_name(name)
        seconds = validate.duration(duration, what=f"sleep {name!r} duration")
        await self._sleep(name, lambda now: now + seconds)

    async def sleep_until(self, name: str, when: datetime | int | float) -> None:
        """Hibernate until ``when`` (an aware datetime or epoch seconds)."""
        name = validate.step_name(name)
        target = validate.timestamp(when, what=f"sleep_until {name!r} time")
        await self._sleep(name, lambda now: target)

    async def _sleep(self, name: str, wake_time: Callable[[float], float]) -> None:
        run = self._run
        count = run.next_count(name)
        record = run.journal.get((name, count))
        if record is not None and record.state == "completed":
            return
        run.check_may_wait()
        now = run.clock.now()
        if record is None:
            wake_at = wake_time(now)
            run.history("sleep.started", name, count, until=wake_at)
            record = StepRecord(name, count, "sleep", "sleeping", now, wake_at=wake_at)
            if wake_at > now:
                run.defer(record)  # journaled with the suspension, before it hibernates
        wake_at = record.wake_at if record.wake_at is not None else now
        if wake_at > now:
            raise run.suspend_until(wake_at)
        run.history("sleep.completed", name, count)
        # Journaled with the run's next write: until then a replay reaches the same verdict
        # from the wake time alone, since time only moves forward.
        run.defer(StepRecord(
            name, count, "sleep", "completed", record.started_at, wake_at=wake_at,
            finished_at=now,
        ))

    # -- events -----------------------------------------------------------------------------
    async def wait_for_event(
        self, name: str, *, type: str, timeout: Duration = "24 hours",
    ) -> StepEvent:
        """Wait for the first unconsumed event of ``type`` (also one sent before the wait).
        Raises :class:`WorkflowTimeoutError` after ``timeout``; the plan may catch it."""
        name = validate.step_name(name)
        event_type = validate.event_type(type)
        seconds = validate.duration(timeout, what=f"wait {name!r} timeout")
        count = self._run.next_count(name)
        return await self._wait(name, count, event_type, seconds, None)

    async def wait_for_approval(
        self, name: str, *, prompt: str, data: Any = None, timeout: Duration = "24 hours",
        on_timeout: str = "reject",
    ) -> Decision:
        """Ask a person to approve: ``prompt`` and ``data`` (what will happen, with which
        arguments) are listed in the approval inbox until someone decides
        (``instance.approve`` / ``instance.reject``, the CLI, the notebook). Returns the
        :class:`Decision`; a rejection is a value, not an error. After ``timeout`` the
        decision is a rejection with reason 'timeout' (``on_timeout="raise"`` raises
        :class:`WorkflowTimeoutError` instead)."""
        name = validate.step_name(name)
        if not isinstance(prompt, str) or not prompt.strip():
            raise InvalidArgumentError(
                f"approval {name!r}: prompt must be a non-empty string saying what will happen"
            )
        if on_timeout not in ("reject", "raise"):
            raise InvalidArgumentError(
                f"approval {name!r}: on_timeout must be 'reject' or 'raise', got {on_timeout!r}"
            )
        request = approvals.request_data(name, prompt, data)
        seconds = validate.duration(timeout, what=f"approval {name!r} timeout")
        run = self._run
        count = run.next_count(name)
        request["version"] = run.version
        try:
            event = await self._wait(name, count, approvals.gate_event_type(name, count),
                                     seconds, request)
        except WorkflowTimeoutError:
            if on_timeout == "raise":
                raise
            return approvals.timed_out(request)
        return approvals.decision(event, request)

    async def _wait(
        self, name: str, count: int, event_type: str, seconds: float,
        request: dict[str, Any] | None,
    ) -> StepEvent:
        run = self._run
        record = run.journal.get((name, count))
        if record is not None:
            if record.state == "completed":
                return _step_event(decode(record.result))
            if record.state == "errored":
                raise _journaled_error(record)
        run.check_may_wait()
        now = run.clock.now()
        started_at = record.started_at if record is not None else now
        deadline_at = record.wake_at if record is not None and record.wake_at else now + seconds
        if record is None:
            run.history("wait.started", name, count, type=event_type, until=deadline_at)
        # An approval is asked when first reached, and again when other code (an upgrade)
        # reaches it: the waiting record keeps the request as last asked.
        asked = decode(record.result) if record is not None and record.result else None
        reask = request is not None and (
            not isinstance(asked, dict) or asked.get("version") != request.get("version"))
        if reask:
            run.history("approval.requested", name, count, type=event_type,
                        until=deadline_at, **(request or {}))
        # An inbox empty at the claim needs no read before a wait that will hibernate: an
        # event sent since is found by the suspend, which then queues the instance again.
        # A wait already past its deadline reads it (an event that came in time wins).
        event = (
            await run.next_event(event_type)
            if run.inbox_pending or now >= deadline_at else None
        )
        if event is not None:
            # Splice the stored payload in: it was checked against the size limit when sent.
            text = (
                f'{{"type":{json.dumps(event.type)},"timestamp":{event.at!r},'
                f'"payload":{event.payload or "null"}}}'
            )
            run.history("wait.completed", name, count, type=event_type)
            run.consuming.add(event.seq)
            try:
                await run.save(StepRecord(
                    name, count, "wait", "completed", started_at, result=text,
                    event_type=event_type, wake_at=deadline_at, finished_at=now,
                ), consume=event.seq)
            finally:
                run.consuming.discard(event.seq)
            return _step_event(decode(text))
        if now >= deadline_at:
            error = WorkflowTimeoutError(
                f"wait {name!r} for an event of type {event_type!r} timed out after "
                f"{deadline_at - started_at:g} seconds"
            )
            err_name, message, where = describe(error)
            run.history("wait.timed_out", name, count, type=event_type)
            await run.save(StepRecord(
                name, count, "wait", "errored", started_at, error_name=err_name,
                error_message=message, error_detail=where, event_type=event_type,
                wake_at=deadline_at, finished_at=now,
            ))
            raise error
        if record is None or reask:
            run.defer(StepRecord(
                name, count, "wait", "waiting", started_at, event_type=event_type,
                wake_at=deadline_at,
                result=None if request is None else encode(request, what="approval request"),
            ))
        raise run.suspend_until(deadline_at, event_type)

    # -- for sandbox runners -----------------------------------------------------------------
    def journaled(self) -> list[tuple[str, int]]:
        """The (name, occurrence) of every journal entry this run started with or wrote.
        A sandbox runner sends these to its process so that a step not among them may run
        its body at once; a replayed step is always asked for."""
        return list(self._run.journal)

    # -- the instance's log -----------------------------------------------------------------
    def log(self, text: str) -> None:
        """Append ``text`` to the instance's log: an 'instance.log' event in ``events()``,
        written with the run's next write. Output beyond 64 KiB per run is dropped, and so is
        output while the run replays journaled steps (the first run logged it)."""
        self._run.log(str(text))

    # -- parallel steps ---------------------------------------------------------------------
    async def all(self, *awaitables: Awaitable[T]) -> list[T]:
        """Run steps concurrently; results in argument order (``asyncio.gather`` for plans)."""
        return list(await asyncio.gather(*awaitables))


def _check_retries(name: str, retries: Retries | Mapping[str, Any] | None) -> Retries:
    if retries is None:
        return DEFAULT_RETRIES
    if isinstance(retries, Mapping):  # plans (which cannot import agentflow) pass a dict
        unknown = set(retries) - {"limit", "delay", "backoff"}
        if unknown:
            raise InvalidArgumentError(
                f"step {name!r}: unknown retries keys {sorted(unknown)}; use limit, delay, "
                "backoff"
            )
        retries = Retries(**retries)
    if not isinstance(retries, Retries):
        raise InvalidArgumentError(
            f"step {name!r}: retries must be af.Retries(limit=..., delay=..., backoff=...), "
            f"got {type(retries).__name__}"
        )
    validate.positive_int(retries.limit, what=f"step {name!r} retries.limit", minimum=0)
    if retries.backoff not in _BACKOFFS:
        raise InvalidArgumentError(
            f"step {name!r}: retries.backoff must be one of {', '.join(_BACKOFFS)}, "
            f"got {retries.backoff!r}"
        )
    if not callable(retries.delay):
        validate.duration(retries.delay, what=f"step {name!r} retries.delay")
    return retries


def _retry_delay(retries: Retries, context: StepContext, error: Exception, attempt: int) -> float:
    delay = retries.delay
    if callable(delay):
        return validate.duration(delay(context, error), what="retries.delay result")
    base: float = validate.duration(delay)
    if retries.backoff == "linear":
        return base * attempt
    if retries.backoff == "exponential":
        return base * float(2 ** min(attempt - 1, 64))  # no overflow after many attempts
    return base


def _takes_context(fn: Callable[..., Any]) -> bool:
    code = getattr(fn, "__code__", None)
    # (a plain function or lambda, the common case, skips inspect)
    if code is not None and (type(fn) is FunctionType or not inspect.ismethod(fn)):
        return bool(code.co_argcount - len(getattr(fn, "__defaults__", None) or ()))
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return False
    return any(
        p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        for p in signature.parameters.values()
    )


def _begin(fn: Callable[..., Any], context: StepContext | None) -> tuple[bool, Any]:
    """Call a step body (with ``context`` if it takes one): (True, its result) when it
    finished without waiting (sync bodies, and coroutines that never wait: they run eagerly
    to their first wait), else (False, what to await for the result)."""
    result = fn() if context is None else fn(context)
    if type(result) is CoroutineType:
        try:
            first = result.send(None)
        except StopIteration as done:
            return True, done.value
        return False, Resumed(result, first)
    if inspect.isawaitable(result):
        return False, result
    return True, result


async def _finish(awaitable: Awaitable[Any], current: Attempt, run: RunState,
                  timeout: float) -> Any:
    """Await a step body that waits, under the attempt's timeout in the engine clock's time
    (nothing could interrupt the part that ran before its first wait)."""
    try:
        return await run.deadlines.run(awaitable, timeout)
    except DeadlineExceeded:
        raise WorkflowTimeoutError(
            f"step {current.name!r} attempt {current.attempt} timed out after {timeout:g} seconds"
        ) from None


def _journaled_error(record: StepRecord) -> Exception:
    name = record.error_name or "StepError"
    return rebuild(name, record.error_message or "", record.error_detail)


def _step_event(result: dict[str, Any]) -> StepEvent:
    return StepEvent(result["type"], result["payload"], _utc(result["timestamp"]))
