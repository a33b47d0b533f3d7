"""Routing a dispatched instance's run to its tenant's code."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any, cast

from ..errors import AgentflowError, InvalidStateError
from ..records import Event
from ..workflow import Runner
from .binding import SEPARATOR
from .envelope import pinned, unwrap
from .loader import Loader
from .request import DispatchRequest, LoadRunner


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
    # A Loader (one that decides nothing per request) answers a hit from its cache without
    # the request records being built.
    runner: Runner | None = None
    if type(load_runner).__call__ is Loader.__call__:
        runner = cast(Loader, load_runner).lookup(tenant, sha256)
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
