"""Replaying code against a recorded run: every step is served from the history and no step
body runs. Where the code asks for other steps than the history holds, the report says
exactly where: a revised plan or a new tool version checked against production runs."""

from __future__ import annotations

import ast
import asyncio
import builtins
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .. import approvals, errors
from .._errors_journal import rebuild
from ..errors import AgentflowError
from ..records import ErrorInfo, Event, StepEvent, StepInfo
from ..workflow import as_runner
from .history import RecordedRun

_PENDING = ("waiting", "sleeping", "retrying")


class ReplayDivergenceError(AgentflowError, AssertionError):
    """The code did not follow the recorded run; ``divergence`` says where."""

    def __init__(self, divergence: Divergence) -> None:
        super().__init__(divergence.message)
        self.divergence = divergence


@dataclass(frozen=True)
class Divergence:
    """Where code and history part: the step call's position (1-based, in call order), what
    the history holds there and what the code asked for."""

    position: int
    expected: str | None  # e.g. "do 'unit tests' #1"; None when the history had no more
    found: str | None  # what the code did instead (None: it finished or failed)
    message: str


@dataclass(frozen=True)
class ReplayReport:
    ok: bool
    replayed: int  # step calls served from the history
    output: Any = None
    error: ErrorInfo | None = None
    divergence: Divergence | None = None
    reached_end: bool = True  # False when the recording ends at a step still pending

    def raise_for_divergence(self) -> ReplayReport:
        if self.divergence is not None:
            raise ReplayDivergenceError(self.divergence)
        return self


class _Diverged(BaseException):
    pass


class _EndOfRecording(BaseException):
    pass


def _describe(kind: str, name: str, count: int) -> str:
    return f"{kind} {name!r} #{count}"


class ReplayStep:
    """The ``step`` of a replay: serves journaled results in order and notes divergence."""

    def __init__(self, run: RecordedRun) -> None:
        ordered = sorted(enumerate(run.steps), key=lambda item: (
            item[1].started_at or datetime.min.replace(tzinfo=UTC), item[0]))
        self._order = [s for _, s in ordered]
        self._by_key = {(s.name, s.count): s for s in run.steps}
        self._counts: dict[str, int] = {}
        self._used: set[tuple[str, int]] = set()
        self.calls = 0
        self.divergence: Divergence | None = None

    def _entry(self, kind: str, name: str) -> StepInfo:
        self.calls += 1
        count = self._counts[name] = self._counts.get(name, 0) + 1
        entry = self._by_key.get((name, count))
        found = _describe(kind, name, count)
        if entry is None or entry.kind != kind:
            expected = self.next_expected()
            there = (f"the history has {expected} there" if expected
                     else "the history has no more steps")
            if entry is not None:
                there = f"the history has {_describe(entry.kind, name, count)} by that name"
            self._diverge(found, expected, f"the code called {found}, but {there}")
        assert entry is not None
        self._used.add((name, count))
        if entry.state in _PENDING:
            raise _EndOfRecording
        return entry

    def _diverge(self, found: str | None, expected: str | None, what: str) -> None:
        if self.divergence is None:
            self.divergence = Divergence(self.calls, expected, found,
                                         f"replay diverged at step call {self.calls}: {what}")
        raise _Diverged

    def next_expected(self) -> str | None:
        for s in self._order:
            if (s.name, s.count) not in self._used:
                return _describe(s.kind, s.name, s.count)
        return None

    def unreplayed(self) -> list[StepInfo]:
        return [s for s in self._order if (s.name, s.count) not in self._used]

    async def do(self, name: str, fn: Callable[..., Any], **options: Any) -> Any:
        entry = self._entry("do", name)
        if entry.state == "errored":
            raise _rebuilt(entry.error or ErrorInfo("StepError", ""))
        return entry.result

    async def sleep(self, name: str, duration: Any) -> None:
        self._entry("sleep", name)

    async def sleep_until(self, name: str, when: Any) -> None:
        self._entry("sleep", name)

    async def wait_for_event(self, name: str, *, type: str, timeout: Any = "24 hours") -> Any:
        entry = self._entry("wait", name)
        if entry.state == "errored":
            raise _rebuilt(entry.error or ErrorInfo("WorkflowTimeoutError", ""))
        return _event(entry, type)

    async def wait_for_approval(self, name: str, *, prompt: str, data: Any = None,
                                timeout: Any = "24 hours", on_timeout: str = "reject") -> Any:
        entry = self._entry("wait", name)
        request = {"data": data}
        if entry.state == "errored":
            if on_timeout == "raise":
                raise _rebuilt(entry.error or ErrorInfo("WorkflowTimeoutError", ""))
            return approvals.timed_out(request)
        return approvals.decision(_event(entry, "approval"), request)

    async def all(self, *awaitables: Awaitable[Any]) -> list[Any]:
        return list(await asyncio.gather(*awaitables))

    def log(self, text: str) -> None:
        pass


async def replay(code: Any, run: RecordedRun, *,
                 tools: Iterable[str] | None = None) -> ReplayReport:
    """Run ``code`` against ``run``: a workflow (class, instance or ``async def run``), or a
    plan's source (compiled with the sandbox, tools that refuse to be called); None replays
    the run's own recorded plan. No step body runs."""
    runner = _runner(code if code is not None else run.source, tools)
    step = ReplayStep(run)
    event = Event(run.params, _when(run.created_at), run.instance_id, run.workflow)
    try:
        output = await runner(event, step)
    except _Diverged:
        return ReplayReport(False, step.calls, divergence=step.divergence)
    except _EndOfRecording:
        return ReplayReport(True, step.calls, reached_end=False)
    except Exception as exc:
        return _failed(step, run, ErrorInfo(type(exc).__name__, str(exc)))
    return _finished(step, run, output)


async def assert_replays(code: Any, run: RecordedRun, *,
                         tools: Iterable[str] | None = None) -> ReplayReport:
    """``replay``, raising :class:`ReplayDivergenceError` on divergence (for tests)."""
    return (await replay(code, run, tools=tools)).raise_for_divergence()


def _finished(step: ReplayStep, run: RecordedRun, output: Any) -> ReplayReport:
    left = [s for s in step.unreplayed() if s.state not in _PENDING]
    if left:
        expected = _describe(left[0].kind, left[0].name, left[0].count)
        return _report_divergence(step, expected, None,
                                  f"the code finished after {step.calls} step calls, but the "
                                  f"history goes on with {expected} ({len(left)} more)")
    if run.status == "complete" and output != run.output:
        return _report_divergence(step, None, None,
                                  f"the code returned {output!r:.200}, the recorded run "
                                  f"returned {run.output!r:.200}")
    if run.status == "errored":
        return _report_divergence(step, None, None,
                                  f"the code completed, but the recorded run failed with "
                                  f"{run.error.name if run.error else 'an error'}")
    return ReplayReport(True, step.calls, output=output)


def _failed(step: ReplayStep, run: RecordedRun, error: ErrorInfo) -> ReplayReport:
    if run.status == "errored" and run.error is not None and run.error.name == error.name:
        return ReplayReport(True, step.calls, error=error)
    recorded = (f"the recorded run failed with {run.error.name}" if run.status == "errored"
                and run.error else f"the recorded run is {run.status}")
    return _report_divergence(step, step.next_expected(), None,
                              f"the code failed with {error.name}: {error.message[:200]}; "
                              f"{recorded}", error=error)


def _report_divergence(step: ReplayStep, expected: str | None, found: str | None, what: str,
                       *, error: ErrorInfo | None = None) -> ReplayReport:
    divergence = Divergence(step.calls, expected, found,
                            f"replay diverged after step call {step.calls}: {what}")
    return ReplayReport(False, step.calls, error=error, divergence=divergence)


def _runner(code: Any, tools: Iterable[str] | None) -> Callable[[Any, Any], Awaitable[Any]]:
    if isinstance(code, str):
        import sandbox

        names = sorted(tools) if tools is not None else _tool_names(code)
        refusing = {name: _refuse(name) for name in names}
        return sandbox.compile_plan(code, tools=names).runner(tools=refusing)
    if code is None:
        raise AgentflowError("this run has no recorded plan source: pass the workflow code")
    runner: Callable[[Any, Any], Awaitable[Any]] = as_runner(code)
    return runner


def _tool_names(source: str) -> list[str]:
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    return sorted({n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)
                   and isinstance(n.value, ast.Name) and n.value.id == "tools"})


def _refuse(name: str) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(f"tool {name!r} was called during a replay: no step body runs")
    return call


def _event(entry: StepInfo, type: str) -> StepEvent:
    """The event a completed wait took, as its journal entry holds it."""
    result = entry.result or {}
    return StepEvent(str(result.get("type", type)), result.get("payload"),
                     _when(result.get("timestamp")))


def _rebuilt(error: ErrorInfo) -> Exception:
    """The recorded error as the code would have seen it: agentflow's and the builtin
    exception classes by name, others as a StepError subclass of that name."""
    for module in (errors, builtins):
        cls = getattr(module, error.name, None)
        if isinstance(cls, type) and issubclass(cls, Exception):
            try:
                return cls(error.message)
            except Exception:  # a constructor that wants other arguments
                break
    return rebuild(error.name, error.message, None)


def _when(value: Any) -> datetime:
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(value, UTC)
    return datetime.now(UTC)
