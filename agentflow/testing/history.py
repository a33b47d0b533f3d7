"""An instance's whole history as one JSON file: export it from a store, load it in a test."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from ..dispatch.binding import SEPARATOR, TenantInstance
from ..dispatch.envelope import ENVELOPE_KEY, unwrap
from ..dispatch.registry import CodeRegistry
from ..errors import InvalidArgumentError
from ..instance import Instance
from ..records import ErrorInfo, StepInfo

FORMAT = "agentflow.history/1"


@dataclass(frozen=True)
class RecordedRun:
    """What one instance did: its params, its code (for a dispatched plan), every journal
    entry with its result or error and attempts, and its history feed (events, approvals)."""

    workflow: str
    instance_id: str
    status: str
    params: Any
    steps: tuple[StepInfo, ...]
    output: Any = None
    error: ErrorInfo | None = None
    tenant_id: str | None = None
    code: dict[str, Any] | None = None  # tenant_id, name, sha256, source
    history: tuple[dict[str, Any], ...] = ()
    created_at: float | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def source(self) -> str | None:
        return None if self.code is None else self.code.get("source")

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT, "workflow": self.workflow, "instance_id": self.instance_id,
            "tenant_id": self.tenant_id, "status": self.status, "params": self.params,
            "output": self.output, "created_at": self.created_at,
            "error": None if self.error is None else {"name": self.error.name,
                                                      "message": self.error.message},
            "code": self.code, "metadata": self.metadata,
            "steps": [_step_dict(s) for s in self.steps], "history": list(self.history),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RecordedRun:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise InvalidArgumentError(
                f"not an agentflow history (expected format {FORMAT!r}); write one with "
                "agentflow.testing.export_run"
            )
        error = data.get("error")
        try:
            return cls(
                workflow=str(data["workflow"]), instance_id=str(data["instance_id"]),
                status=str(data["status"]), params=data.get("params"),
                steps=tuple(_step_from(s) for s in data.get("steps", [])),
                output=data.get("output"),
                error=ErrorInfo(error["name"], error["message"]) if error else None,
                tenant_id=data.get("tenant_id"), code=data.get("code"),
                history=tuple(data.get("history", [])), created_at=data.get("created_at"),
                metadata=dict(data.get("metadata") or {}),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidArgumentError(f"malformed agentflow history: {exc!r}") from None

    def save(self, path: str | Path) -> Path:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")
        return target

    @classmethod
    def load(cls, path: str | Path) -> RecordedRun:
        try:
            data = json.loads(Path(path).read_text())
        except ValueError as exc:
            raise InvalidArgumentError(f"{path}: not JSON: {exc}") from None
        return cls.from_dict(data)


async def export_run(instance: Instance | TenantInstance) -> RecordedRun:
    """Record what ``instance`` did so far (any status)."""
    inner = instance._instance if isinstance(instance, TenantInstance) else instance
    if not isinstance(inner, Instance):
        raise InvalidArgumentError(
            f"export_run takes an Instance or TenantInstance, got {type(instance).__name__}")
    details = await inner.status()
    params, tenant, code, metadata = details.params, None, None, {}
    if isinstance(params, dict) and ENVELOPE_KEY in params:
        envelope, params = unwrap(params)
        tenant, metadata = envelope.tenant_id, envelope.metadata
        source = await CodeRegistry(inner._engine).source(envelope.code)
        code = {**envelope.code.as_dict(), "source": source}
    history = [
        {"type": e.type, "step": e.step, "timestamp": e.timestamp.isoformat(), "data": e.data}
        async for e in inner.events(follow=False)
    ]
    instance_id = inner.id.split(SEPARATOR, 1)[1] if tenant else inner.id
    return RecordedRun(
        workflow=inner.workflow_name, instance_id=instance_id, status=str(details.status),
        params=params, steps=tuple(await inner.steps()), output=details.output,
        error=details.error, tenant_id=tenant, code=code, history=tuple(history),
        created_at=details.created_at.timestamp() if details.created_at else None,
        metadata=metadata,
    )


def _step_dict(s: StepInfo) -> dict[str, Any]:
    return {
        "name": s.name, "count": s.count, "kind": s.kind, "state": s.state,
        "result": s.result, "attempts": s.attempts, "event_type": s.event_type,
        "error": None if s.error is None else {"name": s.error.name, "message": s.error.message},
        "started_at": s.started_at.isoformat() if s.started_at else None,
        "finished_at": s.finished_at.isoformat() if s.finished_at else None,
    }


def _step_from(d: dict[str, Any]) -> StepInfo:
    error = d.get("error")
    return StepInfo(
        name=str(d["name"]), count=int(d["count"]), kind=str(d["kind"]), state=str(d["state"]),
        result=d.get("result"), attempts=int(d.get("attempts", 0)),
        error=ErrorInfo(error["name"], error["message"]) if error else None,
        started_at=_time(d.get("started_at")), finished_at=_time(d.get("finished_at")),
        event_type=d.get("event_type"),
    )


def _time(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) else None
