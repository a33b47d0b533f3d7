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

from .errors import DuplicateInstanceError
from .storage import InstanceRow

Item = tuple[str, str | None]
CreateMany = Callable[[str, list[Item], str | None], Awaitable[list[InstanceRow]]]


class CreateCoalescer:
    def __init__(self, create_many: CreateMany) -> None:
        # create_many(workflow, items, tenant) creates with skip_existing semantics
        self._create_many = create_many
        self._pending: dict[tuple[str, str | None],
                            list[tuple[Item, asyncio.Future[InstanceRow]]]] = {}
        self._writing: set[asyncio.Task[None]] = set()  # (a task nobody holds may vanish)

    def create(self, workflow: str, item: Item, tenant: str | None) -> Awaitable[InstanceRow]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[InstanceRow] = loop.create_future()
        key = (workflow, tenant)
        waiting = self._pending.get(key)
        if waiting is None:
            waiting = self._pending[key] = []
            loop.call_soon(self._flush, key)  # after the calls made in this turn
        waiting.append((item, future))
        return future

    def _flush(self, key: tuple[str, str | None]) -> None:
        batch = self._pending.pop(key)
        task = asyncio.ensure_future(self._create(key, batch))
        self._writing.add(task)
        task.add_done_callback(self._writing.discard)

    async def _create(self, key: tuple[str, str | None],
                      batch: list[tuple[Item, asyncio.Future[InstanceRow]]]) -> None:
        workflow, tenant = key
        try:
            rows = await self._create_many(workflow, [item for item, _ in batch], tenant)
        except BaseException as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        created = {row.id: row for row in rows}
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
