"""A tenant's view of a workflow binding: ordinary to use, scoped to the tenant's instances."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

from .. import _validate as validate
from .._codec import encode
from .._ids import new_instance_id
from ..approvals import KEEP, ApprovalRequest
from ..errors import InstanceNotFoundError, InvalidArgumentError
from ..instance import Instance, WorkflowBinding
from ..records import InstanceDetails, InstanceEvent, StepInfo
from ..storage import Change, HistoryItem, InstanceRow
from .envelope import CodeRef, unwrap, wrap
from .registry import CodeRegistry

SEPARATOR = "."  # internal id = tenant + "." + the tenant's id; '.' is in neither


def internal_id(tenant_id: str, id: str) -> str:
    return f"{tenant_id}{SEPARATOR}{id}"


def wrap_workflow_binding(
    binding: WorkflowBinding | TenantBinding, *, tenant_id: str, **metadata: Any
) -> TenantBinding:
    """Give a tenant a binding that looks normal and can only see that tenant's instances.

    ``metadata`` travels with every instance to the loader (``plan`` names the tenant's code,
    by default the workflow's name); it is never used to decide who may do what."""
    try:
        json.dumps(metadata)
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentError(f"dispatch metadata must be JSON data: {exc}") from None
    if isinstance(binding, TenantBinding):
        if binding.tenant_id != tenant_id:
            raise InvalidArgumentError(
                f"binding already belongs to tenant {binding.tenant_id!r}, not {tenant_id!r}"
            )
        return TenantBinding(binding.base, tenant_id, {**binding.metadata, **metadata})
    if not isinstance(binding, WorkflowBinding):
        raise InvalidArgumentError(
            f"wrap_workflow_binding takes a WorkflowBinding, got {type(binding).__name__}"
        )
    validate.instance_id(tenant_id)
    return TenantBinding(binding, tenant_id, dict(metadata))


class TenantBinding:
    """``create``, ``create_batch`` and ``get`` for one tenant's instances."""

    def __init__(self, base: WorkflowBinding, tenant_id: str, metadata: dict[str, Any]) -> None:
        self.base = base
        self.tenant_id = tenant_id
        self.metadata = metadata
        self.name = base.name
        self.plan = str(metadata.get("plan", base.name))
        self.registry = CodeRegistry(base._engine)

    def __repr__(self) -> str:
        return f"<TenantBinding {self.name} tenant={self.tenant_id}>"

    async def create(
        self, id: str | None = None, params: Any = None, *, code: CodeRef | None = None,
    ) -> TenantInstance:
        """Create an instance pinned to ``code`` (by default the tenant's newest version)."""
        ref = await self._code(code)
        item = self._item(id, params, ref)
        engine = self.base._engine
        rows = await engine._create(self.name, [item], skip_existing=False, tenant=self.tenant_id)
        return TenantInstance(self, rows[0])

    async def create_batch(self, items: Iterable[Mapping[str, Any]]) -> list[TenantInstance]:
        if isinstance(items, (str, bytes, Mapping)) or not isinstance(items, Iterable):
            raise InvalidArgumentError("create_batch takes a list of {'id', 'params'} dicts")
        ref = await self._code(None)
        prepared = []
        for index, item in enumerate(items):
            if not isinstance(item, Mapping) or set(item) - {"id", "params"}:
                raise InvalidArgumentError(
                    f"create_batch item {index} must be a dict with optional keys 'id' and "
                    "'params'"
                )
            prepared.append(self._item(item.get("id"), item.get("params"), ref))
        engine = self.base._engine
        created = await engine._create(
            self.name, prepared, skip_existing=True, tenant=self.tenant_id
        )
        by_id = {row.id: row for row in created}
        missing = [i for i, _ in prepared if i not in by_id]
        if missing:
            for row in await engine._storage.get_instances(self.name, missing):
                if row.tenant == self.tenant_id:
                    by_id[row.id] = row
        return [TenantInstance(self, by_id[i]) for i, _ in prepared if i in by_id]

    async def get(self, id: str) -> TenantInstance:
        """This tenant's instance ``id``; another tenant's id behaves as unknown."""
        validate.instance_id(id)
        engine = self.base._engine
        engine._check_open()
        row = await engine._storage.get_instance(self.name, internal_id(self.tenant_id, id))
        if row is None or row.tenant != self.tenant_id:
            raise InstanceNotFoundError(f"no instance {id!r} in workflow {self.name!r}")
        return TenantInstance(self, row)

    async def approvals(self, *, older_than: Any = None, limit: int = 100,
                        ) -> list[ApprovalRequest]:
        """This tenant's open approval gates in this workflow (ids as the tenant knows
        them), oldest first."""
        found = await self.base._engine.approvals(
            workflow=self.name, tenant=self.tenant_id, older_than=older_than, limit=limit)
        prefix = self.tenant_id + SEPARATOR
        return [dataclasses.replace(a, instance_id=a.instance_id.removeprefix(prefix))
                for a in found]

    async def _code(self, code: CodeRef | None) -> CodeRef:
        if code is None:
            return await self.registry.latest(self.tenant_id, self.plan)
        if code.tenant_id != self.tenant_id:
            raise InvalidArgumentError("a tenant can only run its own code")
        await self.registry.source(code)  # raises if it was never registered
        return code

    def _item(self, id: str | None, params: Any, ref: CodeRef) -> tuple[str, str | None]:
        local = new_instance_id() if id is None else validate.instance_id(id)
        envelope = wrap(params, self.tenant_id, ref, self.metadata)
        return internal_id(self.tenant_id, local), encode(
            envelope, what=f"params of instance {local!r}"
        )


class TenantInstance:
    """An instance as its tenant sees it: its own id and params, never the envelope."""

    __slots__ = ("_binding", "_instance", "id", "workflow_name")

    def __init__(self, binding: TenantBinding, row: InstanceRow) -> None:
        self._binding = binding
        self._instance = Instance(binding.base._engine, row)
        self.id = row.id.split(SEPARATOR, 1)[1]
        self.workflow_name = row.workflow

    def __repr__(self) -> str:
        return f"<TenantInstance {self.workflow_name}/{self._binding.tenant_id}/{self.id}>"

    async def status(self) -> InstanceDetails:
        full = await self._instance.status()
        _, params = unwrap(full.params)
        return dataclasses.replace(full, id=self.id, params=params)

    async def code(self) -> CodeRef:
        """The code version this instance is pinned to."""
        envelope, _ = unwrap((await self._instance.status()).params)
        return envelope.code

    async def metadata(self) -> dict[str, Any]:
        """The dispatch metadata the instance was created with."""
        envelope, _ = unwrap((await self._instance.status()).params)
        return envelope.metadata

    async def steps(self) -> list[StepInfo]:
        """The instance's journal (see ``Instance.steps``)."""
        return await self._instance.steps()

    async def upgrade(self, code: CodeRef | None = None) -> CodeRef:
        """Pin the instance to other code (by default the tenant's newest version) from its
        next run on; a waiting instance runs again at once (its open approval gates are
        asked again under the new version). Finished steps keep their journaled results."""
        ref = await self._binding._code(code)
        engine = self._binding.base._engine

        def repin(row: InstanceRow, now: float) -> Change:
            envelope, params = unwrap(json.loads(row.params or "null"))
            new = wrap(params, envelope.tenant_id, ref, envelope.metadata)
            fields: dict[str, Any] = {"params": encode(new, what="params"), "updated_at": now}
            if row.status == "waiting":
                # Run it again now: the new code replays up to where it waits, and an open
                # approval gate is asked again under the new version.
                fields.update(status="queued", ready_at=now, woken=1, wake_at=None,
                              wait_types=None)
            return Change(
                fields,
                (HistoryItem("instance.upgraded", now, data={"code": ref.as_dict()}),),
            )

        await self._instance._transition(repin)
        engine._worker_signal(None, self._instance._iid)  # a woken instance is claimed now
        return ref

    async def approvals(self) -> list[ApprovalRequest]:
        prefix = self._binding.tenant_id + SEPARATOR
        return [dataclasses.replace(a, instance_id=a.instance_id.removeprefix(prefix))
                for a in await self._instance.approvals()]

    async def approve(self, gate: str | None = None, *, by: str | None = None,
                      comment: str | None = None, data: Any = KEEP,
                      version: Any = KEEP) -> None:
        """Approve this instance's open gate (see ``Instance.approve``); ``version`` is the
        sha256 of the code the approver reviewed."""
        await self._instance.approve(gate, by=by, comment=comment, data=data, version=version)

    async def reject(self, gate: str | None = None, *, by: str | None = None,
                     comment: str | None = None, version: Any = KEEP) -> None:
        await self._instance.reject(gate, by=by, comment=comment, version=version)

    async def pause(self) -> None:
        await self._instance.pause()

    async def resume(self) -> None:
        await self._instance.resume()

    async def terminate(self) -> None:
        await self._instance.terminate()

    async def restart(self, from_step: str | None = None) -> None:
        await self._instance.restart(from_step)

    async def send_event(self, type: str, payload: Any = None) -> None:
        await self._instance.send_event(type, payload)

    async def wait(self, *, timeout: float | None = None) -> InstanceDetails:
        await self._instance.wait(timeout=timeout)
        return await self.status()

    async def events(self, *, follow: bool = True) -> AsyncIterator[InstanceEvent]:
        async for event in self._instance.events(follow=follow):
            yield dataclasses.replace(event, instance_id=self.id)

