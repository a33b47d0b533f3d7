"""The engine: storage, registered workflows and the embedded worker, opened from a URL."""

from __future__ import annotations

import asyncio
import inspect
import re
from collections.abc import Generator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any

from . import _gc, approvals
from . import _validate as validate
from ._coalesce import CreateCoalescer
from ._deadlines import Deadlines
from ._eager import as_future
from ._watchers import Watchers
from .approvals import ApprovalRequest
from .clock import Clock, SystemClock
from .errors import (
    EngineClosedError,
    InstanceNotFoundError,
    InvalidArgumentError,
    WorkflowNotFoundError,
)
from .instance import Instance, WorkflowBinding, details
from .records import Duration, InstanceDetails
from .runner import RunContext
from .storage import InstanceRow, Storage, storage_from_url
from .worker import Worker, WorkerConfig
from .workflow import Runner, as_runner

_WORKFLOW_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:-]{0,99}")
DEFAULT_MAX_STEPS = 10_000


@dataclass(frozen=True)
class _Registered:
    runner: Runner
    concurrency: int
    fair_share: bool = False
    tenant_concurrency: int | None = None


class Engine:
    """Opens a store, runs registered workflows durably. Use ``Engine.open(url)``."""

    def __init__(
        self,
        storage: Storage,
        *,
        clock: Clock | None = None,
        worker: bool = True,
        max_steps: int = DEFAULT_MAX_STEPS,
        poll_interval: float = 0.5,
        lease_seconds: float = 30.0,
        tune_gc: bool = True,
    ) -> None:
        self._storage = storage
        # New instances start in the create itself when the store can do that (see StartNow);
        # a store written against the older protocol just queues them for a claim.
        self._can_start_now = "start" in inspect.signature(storage.create_instances).parameters
        self.clock: Clock = clock or SystemClock()
        self.max_steps = validate.positive_int(max_steps, what="max_steps")
        self._poll_interval = validate.duration(poll_interval, what="poll_interval")
        self._lease_seconds = validate.duration(lease_seconds, what="lease_seconds")
        self._with_worker = worker
        if not isinstance(tune_gc, bool):
            raise InvalidArgumentError(f"tune_gc must be True or False, got {tune_gc!r}")
        self._tune_gc = tune_gc
        self._gc_held = False
        self._workflows: dict[str, _Registered] = {}
        # Per instance: its status may have changed (waiters), its feed grew (followers);
        # other processes' changes are polled for every ``poll_interval``.
        version = getattr(storage, "data_version", lambda: None)
        self._statuses = Watchers(self._poll_interval, version)
        self._feeds = Watchers(self._poll_interval, version)
        self._coalescer = CreateCoalescer(
            self._create_many, getattr(storage, "before_next_commit", None))
        self._worker: Worker | None = None
        self._open = False

    # -- lifecycle ------------------------------------------------------------------------
    @classmethod
    def open(cls, url: str | Path = "sqlite:///agentflow.db", **options: Any) -> _Opening:
        """``async with Engine.open(url) as engine`` (or ``engine = await Engine.open(url)``).

        Options: ``clock``, ``worker`` (run the embedded worker, default True), ``max_steps``
        per instance (10,000), ``poll_interval`` seconds for other processes' writes (0.5),
        ``lease_seconds`` (30), ``tune_gc`` (default True: while the worker runs, the garbage
        collector's young-generation threshold is raised from the interpreter default of 700
        to 100,000, which saves 15-20% of a busy worker's time; False leaves it alone)."""
        return _Opening(cls(storage_from_url(url), **options))

    async def _start(self) -> Engine:
        await self._storage.open()
        self._open = True
        self._statuses.start()
        self._feeds.start()
        if self._with_worker:
            ctx = RunContext(
                self._storage, self.clock, self.max_steps, self._feeds.notify, self._changed,
                Deadlines(self.clock),
            )
            self._worker = Worker(
                ctx, WorkerConfig(self._poll_interval, self._lease_seconds),
                limits=lambda: {n: w.concurrency for n, w in self._workflows.items()},
                tenant_limits=lambda: {
                    n: w.tenant_concurrency for n, w in self._workflows.items() if w.fair_share
                },
                code_for=lambda name: self._workflows[name].runner,
            )
            self._worker.start()
            if self._tune_gc:
                _gc.hold()
                self._gc_held = True
        subscribe = getattr(self._storage, "subscribe", None)
        if callable(subscribe):  # a shared server tells us when other processes make work
            subscribe(self._woken_elsewhere)
        return self

    def _woken_elsewhere(self) -> None:
        if self._worker is not None:
            self._worker.poke()
        self._changed_everywhere()  # (it may have been a change of theirs elsewhere)

    async def close(self) -> None:
        """Stop the worker (running instances resume from their last step elsewhere or on the
        next open) and close the store. Safe to call twice."""
        if not self._open:
            return
        self._open = False
        worker, self._worker = self._worker, None
        try:
            if worker is not None:
                await worker.close()
        finally:  # even when the release fails or the close is cancelled
            if self._gc_held:
                self._gc_held = False
                _gc.release()
            self._changed_everywhere()  # waiters and followers learn the engine closed
            await self._storage.close()

    async def __aenter__(self) -> Engine:
        if not self._open:
            await self._start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- workflows ------------------------------------------------------------------------
    def register(
        self, name: str, code: object, *, concurrency: int = 100,
        tenant_concurrency: int | None = None,
    ) -> WorkflowBinding:
        """Register workflow code under ``name``; returns its binding. ``concurrency`` caps
        how many of its instances run at once across all workers (others stay queued).

        Instances created for tenants (see ``agentflow.dispatch``) share the slots round-robin
        across tenants when the code asks for it (a dispatch entrypoint does) or when
        ``tenant_concurrency`` caps each tenant's running instances."""
        self._check_open()
        self._check_name(name)
        if name in self._workflows:
            raise InvalidArgumentError(
                f"workflow {name!r} is already registered on this engine; pick another name "
                "or open a new engine"
            )
        validate.positive_int(concurrency, what="concurrency")
        if tenant_concurrency is not None:
            validate.positive_int(tenant_concurrency, what="tenant_concurrency")
        fair = bool(getattr(code, "fair_share", False)) or tenant_concurrency is not None
        self._workflows[name] = _Registered(
            as_runner(code), concurrency, fair, tenant_concurrency
        )
        if self._worker is not None:
            self._worker.poke()
        return WorkflowBinding(self, name)

    def workflow(self, name: str) -> WorkflowBinding:
        """The binding of a workflow registered on this engine."""
        if name not in self._workflows:
            raise WorkflowNotFoundError(
                f"no workflow named {name!r} is registered on this engine; use "
                "engine.binding(name) for one that other worker processes run"
            )
        return WorkflowBinding(self, name)

    def binding(self, name: str) -> WorkflowBinding:
        """A binding for workflow ``name`` whether or not this engine runs its code: instances
        it creates are run by whichever worker registered ``name`` (``agentflow worker``)."""
        self._check_open()
        self._check_name(name)
        return WorkflowBinding(self, name)

    @staticmethod
    def _check_name(name: object) -> None:
        if not isinstance(name, str) or not _WORKFLOW_NAME.fullmatch(name):
            raise InvalidArgumentError(
                f"invalid workflow name {name!r}: use 1-100 letters, digits, '_', '-', '.', ':'"
            )

    # -- instances across workflows -------------------------------------------------------
    async def get(self, id: str, *, workflow: str | None = None) -> Instance:
        """An instance by id, in any workflow of the store (name ``workflow`` if ids repeat)."""
        self._check_open()
        validate.stored_instance_id(id)
        rows = await self._storage.list_instances(id=id, workflow=workflow, limit=2)
        if not rows:
            raise InstanceNotFoundError(f"no instance with id {id!r}")
        if len(rows) > 1:
            raise InvalidArgumentError(
                f"id {id!r} exists in several workflows; pass workflow=... to choose"
            )
        return Instance(self, rows[0])

    async def list_instances(
        self, *, workflow: str | None = None, status: str | None = None, limit: int = 100,
    ) -> list[InstanceDetails]:
        """Newest first."""
        self._check_open()
        rows = await self._storage.list_instances(workflow=workflow, status=status, limit=limit)
        return [details(r) for r in rows]

    async def approvals(
        self, *, workflow: str | None = None, tenant: str | None = None,
        older_than: Duration | None = None, limit: int = 100,
    ) -> list[ApprovalRequest]:
        """The approval inbox: open gates across instances, oldest first; filter by workflow,
        tenant, or age (``older_than``: requested at least that long ago)."""
        self._check_open()
        validate.positive_int(limit, what="limit")
        before = None
        if older_than is not None:
            before = self.clock.now() - validate.duration(older_than, what="older_than")
        rows = await self._storage.pending_approvals(
            workflow=workflow, tenant=tenant, requested_before=before, limit=limit,
            now=self.clock.now())
        return [approvals.from_row(r, r.id, r.tenant) for r in rows]

    # -- internals used by bindings and instances -----------------------------------------
    async def _create(
        self, workflow: str, items: list[tuple[str, str | None]], *, skip_existing: bool,
        tenant: str | None = None,
    ) -> list[InstanceRow]:
        self._check_open()
        if len(items) == 1 and not skip_existing:  # one of many, perhaps: see _coalesce
            return [await self._coalescer.create(workflow, items[0], tenant)]
        return await asyncio.shield(self._write_instances(
            workflow, items, skip_existing=skip_existing, tenant=tenant))

    def _create_many(
        self, workflow: str, items: list[tuple[str, str | None]], tenant: str | None,
    ) -> asyncio.Future[list[InstanceRow]]:
        self._check_open()
        return self._write_instances(workflow, items, skip_existing=True, tenant=tenant)

    def _write_instances(
        self, workflow: str, items: list[tuple[str, str | None]], *, skip_existing: bool,
        tenant: str | None,
    ) -> asyncio.Future[list[InstanceRow]]:
        """The commit of new instances. Rows reach the worker when it lands, before any
        creator goes on, and even if the creator went away meanwhile (the create is
        committed all the same): the hand-over is the future's first callback."""
        worker = self._worker
        start = None if worker is None or not self._can_start_now else worker.start_now(workflow)
        now = self.clock.now()
        if start is None:
            created = self._storage.create_instances(
                workflow, items, now, skip_existing=skip_existing, tenant=tenant)
        else:
            created = self._storage.create_instances(
                workflow, items, now, skip_existing=skip_existing, tenant=tenant, start=start)
        write = as_future(created)
        if worker is not None:
            write.add_done_callback(partial(self._hand_over, worker))
        return write

    def _hand_over(self, worker: Worker, write: asyncio.Future[list[InstanceRow]]) -> None:
        if write.cancelled() or write.exception() is not None:
            return
        rows = write.result()
        started = [row for row in rows if row.owner is not None]
        if started:
            # A lone create's run starts in the turn its caller goes on in, so that its first
            # step joins the commit of the caller's next create; a batch's runs wait a turn,
            # not to hold up a caller that gets many rows.
            worker.adopt(started, soon=len(started) > 1)
        if len(started) != len(rows):  # queued: a claim may take them
            self._worker_signal(None, None)

    def _changed(self, iid: int) -> None:
        """Instance ``iid`` changed here: wake its waiters and the followers of its feed."""
        self._statuses.notify(iid)
        self._feeds.notify(iid)

    def _changed_everywhere(self) -> None:
        self._statuses.notify_all()
        self._feeds.notify_all()

    def _worker_signal(self, what: str | None, iid: int | None) -> None:
        if iid is not None:
            self._changed(iid)
        worker = self._worker
        if worker is None:
            return
        if iid is not None and what == "stop":
            worker.stop_run(iid)
        elif iid is not None and what in ("pause", "resume"):
            worker.set_pause(iid, what == "pause")
        worker.poke()

    def _check_open(self) -> None:
        if not self._open:
            raise EngineClosedError("the engine is closed; open it with Engine.open(url)")


class _Opening:
    """What ``Engine.open`` returns: await it, or use it as an async context manager."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def __await__(self) -> Generator[Any, None, Engine]:
        return self._engine._start().__await__()

    async def __aenter__(self) -> Engine:
        return await self._engine._start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._engine.close()
