"""Handles users hold: a workflow binding (create, get) and an instance (status, control,
events). Both are thin: every state change goes through storage, so they work the same from
the process that runs the instance and from any other process on the same database."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from . import _validate as validate
from . import approvals as _approvals
from . import transitions
from ._codec import decode, encode
from ._ids import new_instance_id
from .approvals import ApprovalRequest
from .errors import InstanceNotFoundError, InvalidArgumentError, InvalidStateError
from .records import ErrorInfo, InstanceDetails, InstanceEvent, StepInfo, _utc
from .status import FINISHED, InstanceStatus
from .storage import HistoryRow, InstanceRow, LeaseLost, StepRecord

if TYPE_CHECKING:
    from .engine import Engine

_TERMINAL_EVENTS = frozenset({"instance.completed", "instance.errored", "instance.terminated"})


def details(row: InstanceRow) -> InstanceDetails:
    error = ErrorInfo(row.error_name, row.error_message or "") if row.error_name else None
    try:
        status = InstanceStatus(row.status)
    except ValueError:
        status = InstanceStatus.UNKNOWN
    return InstanceDetails(
        id=row.id, workflow_name=row.workflow, status=status, output=decode(row.output),
        error=error, params=decode(row.params), created_at=_utc(row.created_at),
        updated_at=_utc(row.updated_at),
    )


def _events(row: HistoryRow) -> list[InstanceEvent]:
    """The feed entries of one history row. A compact 'step.completed' row (``since`` set)
    stands for step.started, attempt.started and step.completed. ``seq`` is row seq * 4 + k:
    increasing along the feed, not dense."""

    def event(k: int, type: str, at: float, attempt: int | None) -> InstanceEvent:
        data: dict[str, Any] = {}
        if row.count is not None:
            data["count"] = row.count
        if attempt is not None:
            data["attempt"] = attempt
        if row.data:
            data.update(json.loads(row.data))
        return InstanceEvent(
            seq=row.seq * 4 + k, instance_id=row.id, workflow_name=row.workflow, type=type,
            timestamp=_utc(at), step=row.step, data=data,
        )

    if row.since is None:
        return [event(0, row.type, row.at, row.attempt)]
    return [
        event(0, "step.started", row.since, None),
        event(1, "attempt.started", row.since, row.attempt),
        event(2, row.type, row.at, row.attempt),
    ]


def step_info(record: StepRecord) -> StepInfo:
    error = (ErrorInfo(record.error_name, record.error_message or "")
             if record.error_name else None)
    return StepInfo(
        name=record.name, count=record.count, kind=record.kind, state=record.state,
        result=decode(record.result), error=error, attempts=record.attempts,
        started_at=_utc(record.started_at),
        finished_at=_utc(record.finished_at) if record.finished_at is not None else None,
        event_type=record.event_type,
    )


class Instance:
    """One workflow instance. Obtain it from ``binding.create`` or ``binding.get``."""

    __slots__ = ("_engine", "_iid", "id", "workflow_name")

    def __init__(self, engine: Engine, row: InstanceRow) -> None:
        self._engine = engine
        self._iid = row.iid
        self.id = row.id
        self.workflow_name = row.workflow

    def __repr__(self) -> str:
        return f"<Instance {self.workflow_name}/{self.id}>"

    async def _row(self) -> InstanceRow:
        self._engine._check_open()
        row = await self._engine._storage.get_instance_by_iid(self._iid)
        if row is None:
            raise InstanceNotFoundError(f"instance {self.id!r} no longer exists")
        return row

    async def status(self) -> InstanceDetails:
        """Current status, with ``output`` once complete and ``error`` once errored."""
        return details(await self._row())

    async def steps(self) -> list[StepInfo]:
        """The instance's journal so far: every step occurrence, in the order they began."""
        row = await self._row()
        return [step_info(r) for r in await self._engine._storage.load_journal(row.iid)]

    # -- approvals --------------------------------------------------------------------------
    async def approvals(self) -> list[ApprovalRequest]:
        """The instance's open approval gates, oldest first."""
        row = await self._row()
        return [_approvals.from_row(r, r.id, r.tenant)
                for r in await _approvals.open_gates(self._engine, row.iid)]

    async def approve(
        self, gate: str | None = None, *, by: str | None = None, comment: str | None = None,
        data: Any = _approvals.KEEP, version: Any = _approvals.KEEP,
    ) -> None:
        """Approve the open gate ``gate`` (or the only open one). ``data`` replaces the
        request's data (edited arguments); ``version`` names the code version the approver
        saw: a decision for another version is refused (:class:`StaleApprovalError`), and so
        is one for a gate decided already (:class:`ApprovalDecidedError`)."""
        await _approvals.decide(self._engine, (await self._row()).iid, self.id, gate,
                               approved=True, by=by, comment=comment, data=data,
                               version=version)

    async def reject(
        self, gate: str | None = None, *, by: str | None = None, comment: str | None = None,
        version: Any = _approvals.KEEP,
    ) -> None:
        """Reject the open gate: the plan gets a Decision with ``approved=False``."""
        await _approvals.decide(self._engine, (await self._row()).iid, self.id, gate,
                               approved=False, by=by, comment=comment, data=_approvals.KEEP,
                               version=version)

    async def pause(self) -> None:
        """Pause: at once when sleeping, waiting or queued; after the current step when running."""
        row = await self._transition(transitions.pause)
        signal = "pause" if row.status == "waiting_for_pause" else None
        self._engine._worker_signal(signal, self._iid)

    async def resume(self) -> None:
        """Resume a paused instance; what was left of its sleeps and waits is kept."""
        await self._transition(transitions.resume)
        self._engine._worker_signal("resume", self._iid)

    async def terminate(self) -> None:
        """Stop the instance for good. A finished instance raises ``InvalidStateError``."""
        await self._transition(transitions.terminate)
        self._engine._worker_signal("stop", self._iid)

    async def restart(self, from_step: str | None = None) -> None:
        """Run again from the start, or keep every step journaled before ``from_step``."""
        self._engine._check_open()
        from_seq = 0
        if from_step is not None:
            validate.step_name(from_step)
            journal = await self._engine._storage.load_journal(self._iid)
            match = next((r for r in journal if r.name == from_step), None)
            if match is None:
                names = ", ".join(sorted({r.name for r in journal})) or "none"
                raise InvalidArgumentError(
                    f"instance {self.id!r} has no journaled step named {from_step!r}; "
                    f"journaled steps: {names}"
                )
            from_seq = match.seq
        await self._transition(
            lambda row, now: transitions.restart(row, now, from_seq, from_step)
        )
        self._engine._worker_signal("stop", self._iid)

    async def send_event(self, type: str, payload: Any = None) -> None:
        """Deliver an event; a ``wait_for_event`` for this type gets it, now or later (FIFO)."""
        event_type = validate.event_type(type)
        text = encode(payload, what=f"payload of event {event_type!r}")
        engine = self._engine
        engine._check_open()
        delivered = await engine._storage.deliver_event(
            self._iid, event_type, text, engine.clock.now())
        if delivered is None:  # finished (the write checks it): nothing was written
            row = await self._row()  # (raises if the instance is gone)
            raise InvalidStateError(
                f"instance {self.id!r} is {row.status} and takes no more events"
            )
        engine._worker_signal(None, self._iid)

    async def events(self, *, follow: bool = True) -> AsyncIterator[InstanceEvent]:
        """The instance's history, then (with ``follow``) its live events until it finishes."""
        engine = self._engine
        feeds, iid = engine._feeds, self._iid
        after = 0
        ended = False  # a terminal entry was read (entries racing the end may follow it)
        while True:
            # Armed before the read (when following): an entry written after it wakes us.
            armed = feeds.arm(iid) if follow else None
            try:
                rows = await engine._storage.read_history(iid, after)
                for row in rows:
                    after = row.seq
                    ended = ended or row.type in _TERMINAL_EVENTS
                    for event in _events(row):
                        yield event
                if len(rows) >= 1000:
                    continue
                if armed is None:
                    return
                if (ended or (after and not rows)) and (await self._row()).status in FINISHED:
                    return
                await feeds.wait(armed)
            finally:
                if armed is not None:
                    feeds.disarm(iid, armed)

    async def wait(self, *, timeout: float | None = None) -> InstanceDetails:
        """Wait until the instance is complete, errored or terminated; return its status.
        Raises ``TimeoutError`` after ``timeout`` seconds of real time."""
        if timeout is not None and (
            isinstance(timeout, bool) or not isinstance(timeout, int | float)
            or not timeout >= 0
        ):
            raise InvalidArgumentError(
                f"wait timeout must be a number of seconds >= 0 or None, got {timeout!r}"
            )
        # (past 1e12 seconds is forever, and a huge int would overflow a float)
        seconds = None if timeout is None or timeout > 1e12 else float(timeout)
        # A loop rather than asyncio.wait_for: no task and timer of its own for each waiter.
        loop = asyncio.get_running_loop()
        deadline = None if seconds is None else loop.time() + seconds
        statuses, iid = self._engine._statuses, self._iid
        while True:
            armed = statuses.arm(iid)  # before the read: a change after it wakes this wait
            try:
                row = await self._row()
                if row.status in FINISHED:
                    return details(row)
                left = None if deadline is None else deadline - loop.time()
                if left is not None and left <= 0:
                    raise TimeoutError(
                        f"instance {self.id!r} did not finish within {timeout} seconds")
                await statuses.wait(armed, left)
            finally:
                statuses.disarm(iid, armed)

    async def _transition(self, decide: Any) -> InstanceRow:
        engine = self._engine
        engine._check_open()
        now = engine.clock.now()
        try:
            row = await engine._storage.transition(self._iid, lambda row: decide(row, now))
        except LeaseLost:
            raise InstanceNotFoundError(f"instance {self.id!r} no longer exists") from None
        return row  # (callers tell the engine with _worker_signal, which wakes its watchers)


class WorkflowBinding:
    """A registered workflow: create instances and look them up."""

    __slots__ = ("_engine", "name")

    def __init__(self, engine: Engine, name: str) -> None:
        self._engine = engine
        self.name = name

    def __repr__(self) -> str:
        return f"<WorkflowBinding {self.name}>"

    async def create(self, id: str | None = None, params: Any = None) -> Instance:
        """Create an instance (a generated id when ``id`` is None). A used id raises
        ``DuplicateInstanceError``."""
        items = [self._item(id, params)]
        rows = await self._engine._create(self.name, items, skip_existing=False)
        return Instance(self._engine, rows[0])

    async def create_batch(self, items: Iterable[Mapping[str, Any]]) -> list[Instance]:
        """Create many instances in one transaction from ``[{"id": ..., "params": ...}]``.
        Ids that already exist are skipped (so a retried batch is idempotent); the returned
        list has an instance for every item, existing ones included."""
        if isinstance(items, (str, bytes, Mapping)) or not isinstance(items, Iterable):
            raise InvalidArgumentError(
                "create_batch takes a list of {'id': ..., 'params': ...} dicts"
            )
        prepared = [self._item_from(i, item) for i, item in enumerate(items)]
        created = await self._engine._create(self.name, prepared, skip_existing=True)
        by_id = {row.id: row for row in created}
        missing = [id for id, _ in prepared if id not in by_id]
        if missing:  # ids that existed before: skipped, but returned
            for row in await self._engine._storage.get_instances(self.name, missing):
                by_id[row.id] = row
        return [Instance(self._engine, by_id[id]) for id, _ in prepared]

    async def get(self, id: str) -> Instance:
        """The instance with this id; ``InstanceNotFoundError`` if there is none."""
        self._engine._check_open()
        validate.instance_id(id)
        row = await self._engine._storage.get_instance(self.name, id)
        if row is None:
            raise InstanceNotFoundError(f"no instance {id!r} in workflow {self.name!r}")
        return Instance(self._engine, row)

    def _item(self, id: str | None, params: Any) -> tuple[str, str | None]:
        instance_id = new_instance_id() if id is None else validate.instance_id(id)
        return instance_id, encode(params, what=f"params of instance {instance_id!r}")

    def _item_from(self, index: int, item: object) -> tuple[str, str | None]:
        if not isinstance(item, Mapping) or set(item) - {"id", "params"}:
            raise InvalidArgumentError(
                f"create_batch item {index} must be a dict with optional keys 'id' and "
                f"'params', got {item!r:.80}"
            )
        return self._item(item.get("id"), item.get("params"))
