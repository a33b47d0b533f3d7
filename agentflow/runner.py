"""One run of one instance: replay its journal through the workflow code up to where it must
wait, then record how the run ended (complete, errored, or hibernating)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

from ._codec import decode, encode
from ._control import Stop, Suspend
from ._deadlines import Deadlines
from ._errors_journal import describe
from .clock import Clock
from .errors import PayloadError, StepLimitExceededError
from .records import Event, _utc
from .run_state import RunState
from .step import Step
from .storage import HistoryItem, InstanceRow, LeaseLost, Storage
from .workflow import Runner


@dataclass(frozen=True)
class RunContext:
    storage: Storage
    clock: Clock
    max_steps: int
    notify: Callable[[int], None]  # this instance's feed grew
    run_ended: Callable[[int], None]  # its status and feed changed (a run of it ended here)
    deadlines: Deadlines
    busy_runs: set[RunState] = field(default_factory=set)


async def load_run(ctx: RunContext, row: InstanceRow) -> RunState:
    # A first run (every claim counts one) has nothing journaled yet: skip the read.
    journal = [] if row.runs == 1 else await ctx.storage.load_journal(row.iid)
    assert row.owner is not None, "a claimed instance has an owner token"
    return RunState(
        iid=row.iid, instance_id=row.id, owner=row.owner, storage=ctx.storage, clock=ctx.clock,
        max_steps=ctx.max_steps, journal={(r.name, r.count): r for r in journal},
        notify=ctx.notify, pause_requested=row.status == "waiting_for_pause",
        busy_runs=ctx.busy_runs, deadlines=ctx.deadlines, replayed=len(journal),
        inbox_pending=row.inbox_pending,
    )


async def execute(ctx: RunContext, row: InstanceRow, state: RunState, code: Runner) -> None:
    """Run the workflow code against ``state`` and journal the outcome."""
    params = decode(row.params)
    event = Event(params, _utc(row.created_at), row.id, row.workflow)
    version_of = getattr(code, "version_of", None)
    if callable(version_of):
        with contextlib.suppress(Exception):
            state.version = version_of(params)
    outcome: str
    output: object = None
    error: BaseException | None = None
    try:
        output = await code(event, Step(state))
        outcome = "complete"
    except Suspend:
        outcome = "suspend"
    except Stop:
        outcome = "stop"
    except Exception as exc:
        outcome, error = "errored", exc
    await state.settle()
    if state.stopped or outcome == "stop":
        return
    if state.limit_hit and not isinstance(error, StepLimitExceededError):
        outcome, error = "errored", StepLimitExceededError(
            f"instance {row.id!r} called more than {state.max_steps} steps"
        )
    with contextlib.suppress(LeaseLost):
        await _record_outcome(ctx, state, outcome, output, error)
    ctx.run_ended(state.iid)


async def _record_outcome(
    ctx: RunContext, state: RunState, outcome: str, output: object, error: BaseException | None,
) -> None:
    now = ctx.clock.now()
    if outcome == "suspend":
        await ctx.storage.suspend(
            state.iid, state.owner, now, state.wake_at, sorted(state.wait_types),
            state.take_history(), records=state.take_deferred(),
        )
        return
    if outcome == "complete":
        try:
            text = encode(output, what="workflow output")
        except PayloadError as exc:
            outcome, error = "errored", exc
        else:
            history = [*state.take_history(), HistoryItem("instance.completed", now)]
            await ctx.storage.finish(
                state.iid, state.owner, now, "complete", text, None, history,
                records=state.take_deferred(),
            )
            return
    assert error is not None
    name, message, _ = describe(error)
    history = [
        *state.take_history(),
        HistoryItem("instance.errored", now, data={"error": {"name": name, "message": message}}),
    ]
    await ctx.storage.finish(
        state.iid, state.owner, now, "errored", None, (name, message), history,
        records=state.take_deferred(),
    )

