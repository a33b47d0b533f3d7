"""Routing a dispatched instance's run to its tenant's code."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import AgentflowError, InvalidStateError
from ..records import Event
from ..workflow import Runner
from .binding import SEPARATOR
from .envelope import CodeRef, pinned, unwrap


@dataclass(frozen=True, slots=True)
class DispatchRequest:
    """What a loader gets: whose code, which version, the metadata and the caller's context."""

    tenant_id: str
    code: CodeRef
    metadata: dict[str, Any]
    context: Mapping[str, Any] = field(default_factory=dict)


LoadRunner = Callable[[DispatchRequest], Runner | Awaitable[Runner]]


async def dispatch_workflow(
    context: Mapping[str, Any] | None, event: Event, step: Any, load_runner: LoadRunner,
) -> Any:
    """Unwrap the envelope, load the tenant's runner and run it with the tenant's own event
    and the same ``step``. Loader and runner errors become the instance's error."""
    tenant, sha256, params = pinned(event.payload)
    prefix = tenant + SEPARATOR
    if not event.instance_id.startswith(prefix):
        # The envelope is written by the tenant's binding; this never holds for real data.
        raise InvalidStateError("the dispatch envelope does not match the instance's tenant")
    # A loader with a cache answers a hit without the request records being built.
    lookup = getattr(load_runner, "lookup", None)
    runner: Runner | None = lookup(tenant, sha256) if lookup is not None else None
    if runner is None:
        envelope, _ = unwrap(event.payload)
        loaded = load_runner(DispatchRequest(tenant, envelope.code, envelope.metadata,
                                             context or {}))
        runner = await loaded if inspect.isawaitable(loaded) else loaded
    tenant_event = Event(params, event.timestamp, event.instance_id[len(prefix):],
                         event.workflow_name)
    return await runner(tenant_event, step)


def create_dynamic_workflow_entrypoint(
    load_runner: LoadRunner, *, context: Mapping[str, Any] | None = None,
) -> Runner:
    """Workflow code for ``engine.register``: every instance runs its tenant's code. Tenants
    share the workflow's slots round-robin."""

    async def run(event: Event, step: Any) -> Any:
        return await dispatch_workflow(context, event, step, load_runner)

    run.fair_share = True  # type: ignore[attr-defined]
    run.version_of = code_version  # type: ignore[attr-defined]  # approvals name it
    return run


def code_version(params: Any) -> str | None:
    """The sha256 of the tenant code an instance is pinned to (its approval requests carry
    it; a decision for another version is refused)."""
    try:
        return pinned(params)[1]
    except (AgentflowError, ValueError):
        return None
