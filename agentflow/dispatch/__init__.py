"""Dynamic dispatch: per-tenant plan code on one registered workflow, pinned and isolated.

    registry = CodeRegistry(engine)
    await registry.register("acme", "release", source)           # validated, versioned
    loader = Loader(engine, pool=pool, tools_for=tools_of_tenant)
    dynamic = engine.register("plans", create_dynamic_workflow_entrypoint(loader))
    acme = wrap_workflow_binding(dynamic, tenant_id="acme", plan="release")
    instance = await acme.create(params={...})                    # pinned to acme's code now
"""

from .binding import TenantBinding, TenantInstance, wrap_workflow_binding
from .entrypoint import create_dynamic_workflow_entrypoint, dispatch_workflow
from .envelope import ENVELOPE_KEY, CodeRef, MissingEnvelopeError
from .loader import Loader
from .registry import CodeNotFoundError, CodeRegistry, CodeVersion
from .request import DispatchRequest, LoadRunner

__all__ = [
    "ENVELOPE_KEY",
    "CodeNotFoundError",
    "CodeRef",
    "CodeRegistry",
    "CodeVersion",
    "DispatchRequest",
    "LoadRunner",
    "Loader",
    "MissingEnvelopeError",
    "TenantBinding",
    "TenantInstance",
    "create_dynamic_workflow_entrypoint",
    "dispatch_workflow",
    "wrap_workflow_binding",
]
