"""Single creates issued together go to the store as one batch.

``asyncio.gather`` over many ``binding.create()`` calls (or many requests served at once)
starts them all in the same turn of the event loop. Each would be its own unit of work, a row
inserted and returned by its own statement; collected until that turn ends, they are inserted
together (one statement for the batch) and each caller still gets its own row, or its own
``DuplicateInstanceError`` when its id was taken (by an existing instance, or by an earlier
call in the same batch).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from functools import partial

from .errors import DuplicateInstanceError
from .storage import InstanceRow

Item = tuple[str, str | None]
# create_many(workflow, items, tenant) creates with skip_existing semantics; its future is
# done when the rows are committed.
CreateMany = Callable[[str, list[Item], str | None], "asyncio.Future[list[InstanceRow]]"]
Batch = list[tuple[Item, "asyncio.Future[InstanceRow]"]]


class CreateCoalescer:
    def __init__(self, create_many: CreateMany,
                 before_next_commit: Callable[[Callable[[], None]], None] | None = None,
                 ) -> None:
        self._create_many = create_many
        # Where the store commits in groups, a turn's creates are handed to it as its next
        # commit begins: they join that commit rather than take a turn (and, behind the
        # commit of the running instances' steps already scheduled, a commit) of their own.
        self._before_next_commit = before_next_commit or _next_turn
        self._pending: dict[tuple[str, str | None], Batch] = {}
        # The writes in flight (a task nobody holds may vanish: on PostgreSQL it is one).
        self._writing: set[asyncio.Future[list[InstanceRow]]] = set()

    def create(self, workflow: str, item: Item, tenant: str | None) -> Awaitable[InstanceRow]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[InstanceRow] = loop.create_future()
        key = (workflow, tenant)
        waiting = self._pending.get(key)
        if waiting is None:
            waiting = self._pending[key] = []
            self._before_next_commit(partial(self._flush, key))  # after this turn's calls
        waiting.append((item, future))
        return future

    def _flush(self, key: tuple[str, str | None]) -> None:
        # The batch's rows go to their callers straight from the commit's future: a
        # sequential create loop waits a loop turn per hop, and a task per hop was three.
        batch = self._pending.pop(key)
        workflow, tenant = key
        try:
            write = self._create_many(workflow, [item for item, _ in batch], tenant)
        except BaseException as exc:
            _fail(batch, exc)
            if not isinstance(exc, Exception):
                raise
            return
        self._writing.add(write)
        write.add_done_callback(self._writing.discard)
        write.add_done_callback(partial(_settle, workflow, batch))


def _next_turn(callback: Callable[[], None]) -> None:
    asyncio.get_running_loop().call_soon(callback)


def _fail(batch: Batch, error: BaseException) -> None:
    for _, future in batch:
        if not future.done():
            future.set_exception(error)


def _settle(workflow: str, batch: Batch, write: asyncio.Future[list[InstanceRow]]) -> None:
    if write.cancelled():
        _fail(batch, asyncio.CancelledError())
        return
    error = write.exception()
    if error is not None:
        _fail(batch, error)
        return
    created = {row.id: row for row in write.result()}
    for (id, _), future in batch:
        if future.done():  # the caller was cancelled; its instance exists all the same
            created.pop(id, None)
            continue
        row = created.pop(id, None)  # an id asked for twice: the first call has it
        if row is not None:
            future.set_result(row)
        else:
            future.set_exception(DuplicateInstanceError(
                f"an instance with id {id!r} already exists in workflow {workflow!r}; "
                "choose another id, or use get(id) to reach the existing one"
            ))
