"""The state of one run of one instance: its journal, step counters, pending history and the
signals (pause, stop) that reach it while it runs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ._control import Stop, Suspend
from ._deadlines import Deadlines
from .clock import Clock
from .errors import StepLimitExceededError
from .storage import HistoryItem, InboxEvent, LeaseLost, StepRecord, Storage

# A step still running after this long gets its 'started' history written without waiting for
# its result, so followers of events() see it (see Worker._flush_loop).
FLUSH_STARTED_AFTER = 0.1
MAX_LOG_BYTES = 64 * 1024


@dataclass(slots=True, eq=False)
class Attempt:
    """A step attempt in progress; its 'started' history is written when it ends, or by the
    worker's flush once it has run for a while."""

    name: str
    count: int
    attempt: int
    at: float
    first: bool  # the step's first attempt ever: it also starts the step
    flushed: bool = False


@dataclass(eq=False)
class RunState:
    iid: int
    instance_id: str
    owner: str
    storage: Storage
    clock: Clock
    max_steps: int
    journal: dict[tuple[str, int], StepRecord]
    notify: Callable[[int], None]  # the instance's feed grew (its iid)
    deadlines: Deadlines
    busy_runs: set[RunState] = field(default_factory=set)
    version: str | None = None  # the code version running (approval requests name it)
    counts: dict[str, int] = field(default_factory=dict)
    calls: int = 0
    limit_hit: bool = False
    pause_requested: bool = False
    stopped: bool = False
    suspending: bool = False
    wake_at: float | None = None
    wait_types: set[str] = field(default_factory=set)
    pending_history: list[HistoryItem] = field(default_factory=list)
    # The step saved next finished at its first attempt: its feed entry is the compact one
    # the storage makes from its record (set and taken without a wait in between).
    entry: bool = False
    attempts: dict[tuple[str, int], Attempt] = field(default_factory=dict)
    # Journal entries that are written with the run's next write rather than on their own:
    # each can be re-derived on replay from the clock alone (see Step).
    deferred: list[StepRecord] = field(default_factory=list)
    logged: int = 0
    replayed: int = 0  # journal entries at the start of the run: the replay's length
    inbox_pending: bool = True  # False: the inbox was empty when the run was claimed
    busy: int = 0
    busy_since: float = 0.0
    # Storage calls of the run's branches in flight (a journal write, an inbox read): the
    # run's end waits for them too, so a sibling of a branch that hibernates reaches its own
    # wait first. ``consuming``: inbox events those writes are taking.
    pending: int = 0
    consuming: set[int] = field(default_factory=set)
    settling: bool = False
    _idle: asyncio.Event = field(default_factory=asyncio.Event)

    def next_count(self, name: str) -> int:
        """The occurrence number of ``name`` in this run; enforces the step limit."""
        self.calls += 1
        if self.calls > self.max_steps:
            self.limit_hit = True
            raise StepLimitExceededError(
                f"instance {self.instance_id!r} called more than {self.max_steps} steps; raise "
                "Engine.open(max_steps=...) or split the work across instances"
            )
        count = self.counts.get(name, 0) + 1
        self.counts[name] = count
        return count

    def check_active(self) -> None:
        """Called before a step does new work: stop, or suspend when a pause is pending or
        the run is already on its way to hibernate."""
        if self.stopped:
            raise Stop()
        if self.pause_requested or self.suspending:
            self.suspending = True
            raise Suspend()

    def check_may_wait(self) -> None:
        """Called before a sleep or wait is first reached: like ``check_active``, except that
        a run already suspending for a sibling's wait (``step.all``) still records this one,
        so that both are journaled, asked and woken for with the same hibernation."""
        if self.stopped:
            raise Stop()
        if self.pause_requested:
            self.suspending = True
            raise Suspend()

    def suspend_until(self, wake_at: float | None, event_type: str | None = None) -> Suspend:
        if wake_at is not None:
            self.wake_at = wake_at if self.wake_at is None else min(self.wake_at, wake_at)
        if event_type is not None:
            self.wait_types.add(event_type)
        self.suspending = True
        return Suspend()

    def history(
        self, kind: str, step: str, count: int, attempt: int | None = None, /, **data: object
    ) -> None:
        self.pending_history.append(
            HistoryItem(kind, self.clock.now(), step, data, count, attempt)
        )

    # -- attempts and their history ----------------------------------------------------------
    def attempt_running(self, current: Attempt) -> None:
        """A step body is running and waits: the worker's flush may write its 'started'
        history, and ``settle`` waits for it."""
        self.attempts[(current.name, current.count)] = current
        if not self.busy:
            self.busy_since = time.monotonic()
            self.busy_runs.add(self)
            self._idle.clear()
        self.busy += 1

    def attempt_ended(self, current: Attempt, kind: str, *, at: float | None = None,
                      **data: object) -> None:
        """Record the end of an attempt (at ``at``, or now). The common case, a step whose
        first attempt succeeds quickly, becomes one compact 'step.completed' entry that
        readers expand into step.started, attempt.started and step.completed: the storage
        makes it from the step's record (``entry``), which the next save journals."""
        self.attempts.pop((current.name, current.count), None)
        now = self.clock.now() if at is None else at
        if kind == "step.completed" and current.first and current.attempt == 1 and (
            not current.flushed
        ):
            self.entry = True
            return
        if not current.flushed:
            self._started_history(current)
        self.pending_history.append(
            HistoryItem(kind, now, current.name, data, current.count, current.attempt)
        )

    def attempt_abandoned(self, current: Attempt) -> None:
        self.attempts.pop((current.name, current.count), None)

    def _started_history(self, current: Attempt) -> None:
        if current.first:
            self.pending_history.append(
                HistoryItem("step.started", current.at, current.name, {}, current.count)
            )
        self.pending_history.append(HistoryItem(
            "attempt.started", current.at, current.name, {}, current.count, current.attempt
        ))
        current.flushed = True

    def defer(self, record: StepRecord) -> None:
        self.deferred.append(record)
        self.journal[(record.name, record.count)] = record

    def take_deferred(self) -> list[StepRecord]:
        records, self.deferred = self.deferred, []
        return records

    def log(self, text: str) -> None:
        if self.calls < self.replayed:
            return  # replaying: this output was logged by the run that first got here
        left = MAX_LOG_BYTES - self.logged
        if left <= 0:
            return
        if len(text) > left:
            text = text[:left] + "\n[log truncated]\n"
        self.logged += len(text)
        self.pending_history.append(HistoryItem("instance.log", self.clock.now(), None,
                                                {"text": text}))

    def take_history(self) -> list[HistoryItem]:
        items, self.pending_history = self.pending_history, []
        return items

    async def save(self, record: StepRecord, consume: int | None = None) -> None:
        """Journal ``record`` with the pending history; learn of pauses and terminations."""
        earlier, self.deferred = self.deferred, []
        entry, self.entry = self.entry, False
        self.pending += 1
        try:
            status = await self.storage.save_step(
                self.iid, self.owner, record, self.take_history(), consume, earlier=earlier,
                entry=entry,
            )
        except LeaseLost:
            self.stopped = True
            raise Stop() from None
        finally:  # (_storage_call_ended, inline: this runs for every step)
            self.pending -= 1
            if self.settling and not self.pending and not self.busy:
                self._idle.set()
        if status == "waiting_for_pause":
            self.pause_requested = True
        self.journal[(record.name, record.count)] = record
        self.notify(self.iid)

    async def next_event(self, event_type: str) -> InboxEvent | None:
        """The oldest unconsumed event of ``event_type`` that no other wait of this run is
        taking (two branches may wait for the same type at once)."""
        while True:
            self.pending += 1
            try:
                event = await (
                    self.storage.next_inbox_event(self.iid, event_type, skip=self.consuming)
                    if self.consuming else self.storage.next_inbox_event(self.iid, event_type)
                )
            finally:
                self._storage_call_ended()
            if event is None or event.seq not in self.consuming:
                return event  # (else a sibling took it while this read was in flight)

    def _storage_call_ended(self) -> None:
        self.pending -= 1
        if self.settling and not self.pending and not self.busy:
            self._idle.set()

    # -- step bodies in flight --------------------------------------------------------------
    def body_finished(self) -> None:
        self.busy -= 1
        if not self.busy:
            self.busy_runs.discard(self)
            if not self.pending:
                self._idle.set()

    async def flush_history(self) -> None:
        """Write pending history now (for a step that has been running a while)."""
        for current in self.attempts.values():
            if not current.flushed:
                self._started_history(current)
        if self.pending_history and not self.stopped:
            try:
                await self.storage.append_history(self.iid, self.owner, self.take_history())
            except LeaseLost:
                self.stopped = True
            self.notify(self.iid)

    async def settle(self) -> None:
        """Wait for step bodies still running (siblings in a gather) to finish and journal."""
        self.settling = True
        while self.busy or self.pending:
            self._idle.clear()
            await self._idle.wait()
