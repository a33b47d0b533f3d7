"""The envelope around a tenant's params: who created the instance, with which code."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import AgentflowError, InvalidArgumentError, InvalidStateError

ENVELOPE_KEY = "agentflow.dispatch"


class MissingEnvelopeError(AgentflowError):
    """A dispatched workflow got params without the dispatch envelope."""


@dataclass(frozen=True, slots=True)
class CodeRef:
    """The exact code version an instance runs: pinned when the instance is created."""

    tenant_id: str
    name: str
    sha256: str

    def as_dict(self) -> dict[str, str]:
        return {"tenant_id": self.tenant_id, "name": self.name, "sha256": self.sha256}


@dataclass(frozen=True, slots=True)
class Envelope:
    tenant_id: str
    code: CodeRef
    metadata: dict[str, Any]


def wrap(params: Any, tenant_id: str, code: CodeRef, metadata: dict[str, Any]) -> dict[str, Any]:
    """The stored params: the envelope, and the tenant's params always under 'params'
    (present even when None). Tenant params are data: an envelope-looking value inside them
    is never read as one, so envelopes never nest and cannot be forged."""
    return {
        ENVELOPE_KEY: {"tenant_id": tenant_id, "code": code.as_dict(), "metadata": metadata},
        "params": params,
    }


def unwrap(payload: Any) -> tuple[Envelope, Any]:
    data, params = _parts(payload)
    metadata = data.get("metadata")
    try:
        code = CodeRef(**data["code"])
        if metadata is not None and not isinstance(metadata, dict):
            raise TypeError(f"metadata must be an object, got {type(metadata).__name__}")
        envelope = Envelope(str(data["tenant_id"]), code, dict(metadata or {}))
    except (KeyError, TypeError) as exc:
        raise InvalidArgumentError(f"malformed dispatch envelope: {exc}") from None
    return envelope, params


def pinned(payload: Any) -> tuple[str, str, Any]:
    """(tenant id, code sha256, the tenant's params) without building the records: what a
    dispatch needs when its tenant's code is cached. An envelope :func:`unwrap` would refuse
    is refused here too, with the same error; so is code that belongs to another tenant."""
    data, params = _parts(payload)
    tenant = data.get("tenant_id")
    code = data.get("code")
    metadata = data.get("metadata")
    if not (isinstance(tenant, str) and isinstance(code, dict) and len(code) == 3
            and isinstance(code.get("tenant_id"), str) and isinstance(code.get("name"), str)
            and isinstance(code.get("sha256"), str)
            and (metadata is None or isinstance(metadata, dict))):
        unwrap(payload)  # raises the error that names what is malformed
        raise InvalidArgumentError("malformed dispatch envelope")
    if code["tenant_id"] != tenant:
        raise InvalidStateError("the dispatch envelope's code belongs to another tenant")
    return tenant, code["sha256"], params


def _parts(payload: Any) -> tuple[dict[str, Any], Any]:
    if not isinstance(payload, dict) or not isinstance(data := payload.get(ENVELOPE_KEY), dict):
        raise MissingEnvelopeError(
            "this workflow runs tenant code, but the instance's params carry no dispatch "
            "envelope; create its instances through wrap_workflow_binding(binding, "
            "tenant_id=...) rather than the raw binding"
        )
    return data, payload.get("params")
