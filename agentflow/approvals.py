"""Approval requests and decisions: the data behind ``step.wait_for_approval``.

A gate is a wait for an event of its own type (one per gate occurrence), so a decision can only
ever reach the gate it names. The request (prompt, data, code version) is an
'approval.requested' history entry written when the run reaches the gate; a decision is
delivered by the store in one transaction that checks the gate is still open, the version is
the one requested, and the code was not changed since ('approval.decided' in the history).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ._codec import encode
from .errors import InvalidArgumentError, InvalidStateError, NotFoundError, PayloadError
from .records import StepEvent, _utc

MAX_REQUEST_BYTES = 64 * 1024
EVENT_PREFIX = "approval:"


class ApprovalNotFoundError(NotFoundError):
    """No open approval gate of that name on that instance."""


class ApprovalDecidedError(InvalidStateError):
    """The gate was decided already (or timed out); a gate takes one decision."""


class StaleApprovalError(InvalidStateError):
    """The decision names another code version than the one that asked, or the instance's
    code changed since the request: look at the request again."""


@dataclass(frozen=True, slots=True)
class Decision:
    """What ``step.wait_for_approval`` returns. ``reason`` is approved, rejected or timeout.
    ``data`` is the request's data, or the approver's edited version of it."""

    approved: bool
    reason: str
    by: str | None = None
    comment: str | None = None
    data: Any = None
    at: datetime | None = None
    version: str | None = None
    edited: bool = False


@dataclass(frozen=True, slots=True)
class ApprovalRequest:
    """An open gate, as the inbox lists it."""

    instance_id: str
    workflow_name: str
    gate: str
    count: int
    prompt: str
    data: Any
    version: str | None
    requested_at: datetime
    expires_at: datetime | None
    tenant_id: str | None = None

    @property
    def age_seconds(self) -> float:
        return (datetime.now(self.requested_at.tzinfo) - self.requested_at).total_seconds()


def gate_event_type(name: str, count: int) -> str:
    """The event type only this gate occurrence waits for."""
    digest = hashlib.sha256(name.encode()).hexdigest()[:16]
    return f"{EVENT_PREFIX}{digest}:{count}"


def request_data(name: str, prompt: str, data: Any) -> dict[str, Any]:
    text = encode({"prompt": prompt, "data": data}, what=f"approval {name!r} request")
    if len(text) > MAX_REQUEST_BYTES:
        raise PayloadError(
            f"approval {name!r}: prompt and data take {len(text)} bytes, more than "
            f"{MAX_REQUEST_BYTES}; show a summary and keep the bulk in a step result"
        )
    decoded: dict[str, Any] = json.loads(text)
    return decoded


def decision_payload(approved: bool, *, by: str | None, comment: str | None, data: Any,
                     edited: bool, version: str | None) -> dict[str, Any]:
    return {"approved": approved, "by": by, "comment": comment, "data": data,
            "edited": edited, "version": version}


def decision(event: StepEvent, request: dict[str, Any]) -> Decision:
    payload = event.payload if isinstance(event.payload, dict) else {}
    approved = payload.get("approved") is True
    edited = payload.get("edited") is True
    return Decision(
        approved=approved, reason="approved" if approved else "rejected",
        by=payload.get("by"), comment=payload.get("comment"),
        data=payload.get("data") if edited else request.get("data"),
        at=event.timestamp, version=payload.get("version"), edited=edited,
    )


def timed_out(request: dict[str, Any]) -> Decision:
    return Decision(approved=False, reason="timeout", data=request.get("data"),
                    version=request.get("version"))


def from_row(row: Any, instance_id: str, tenant: str | None) -> ApprovalRequest:
    data = json.loads(row.data or "{}")
    until = data.get("until")
    return ApprovalRequest(
        instance_id=instance_id, workflow_name=row.workflow, gate=row.gate, count=row.count,
        prompt=str(data.get("prompt", "")), data=data.get("data"),
        version=data.get("version"), requested_at=_utc(row.at),
        expires_at=_utc(until) if isinstance(until, (int, float)) else None, tenant_id=tenant,
    )


# -- deciding (used by Instance.approve / reject) ------------------------------------------------
KEEP: Any = object()  # approve(data=...) not given: the request's data stands


async def open_gates(engine: Any, iid: int) -> list[Any]:
    rows: list[Any] = await engine._storage.pending_approvals(iid=iid, limit=1000,
                                                              now=engine.clock.now())
    return rows


async def decide(
    engine: Any, iid: int, instance_id: str, gate: str | None, *, approved: bool,
    by: str | None, comment: str | None, data: Any, version: Any,
) -> None:
    """Deliver a decision to the instance's open gate ``gate`` (the only open one when None);
    raise the error that says why it cannot be taken."""
    _check_text(by, "by")
    _check_text(comment, "comment")
    rows = await open_gates(engine, iid)
    if gate is not None:
        rows = [r for r in rows if r.gate == gate]
    if not rows:
        await _explain_missing(engine, iid, instance_id, gate)
    if gate is None and len({r.gate for r in rows}) > 1:
        names = ", ".join(sorted({repr(r.gate) for r in rows}))
        raise InvalidArgumentError(
            f"instance {instance_id!r} has several open approvals ({names}); name the gate"
        )
    row = rows[0]
    check_version = version is not KEEP
    edited = data is not KEEP
    if data is not KEEP:
        request_data(row.gate, "edited", data)  # the same size limit as the request
    payload = encode(decision_payload(
        approved, by=by, comment=comment, data=data if edited else None, edited=edited,
        version=version if check_version else json.loads(row.data or "{}").get("version"),
    ), what=f"decision for approval {row.gate!r}")
    outcome = await engine._storage.decide_approval(
        iid, row.gate, row.count, payload, version if check_version else None, check_version,
        engine.clock.now(),
    )
    if outcome == "ok":
        engine._worker_signal(None, iid)
        return
    if outcome == "finished":  # it finished since the gates were read
        await _explain_missing(engine, iid, instance_id, row.gate)
    asked = json.loads(row.data or "{}").get("version")
    messages = {
        "unknown": (ApprovalNotFoundError, "is not open"),
        "decided": (ApprovalDecidedError, "was decided already; a gate takes one decision"),
        "expired": (ApprovalDecidedError, "timed out: its deadline passed, which decided it "
                    "as a timeout"),
        "version": (StaleApprovalError,
                    f"was requested by code version {asked!r}, not {version!r}; review the "
                    "request as it stands and decide again"),
        "stale": (StaleApprovalError,
                  "was requested before the instance's code changed (upgrade or restart); "
                  "review the new request"),
    }
    error, why = messages.get(outcome, (ApprovalNotFoundError, f"cannot be decided ({outcome})"))
    raise error(f"approval {row.gate!r} of instance {instance_id!r} {why}")


async def _explain_missing(engine: Any, iid: int, instance_id: str, gate: str | None) -> None:
    row = await engine._storage.get_instance_by_iid(iid)
    finished = row is not None and row.status in ("complete", "errored", "terminated")
    journal = await engine._storage.load_journal(iid)
    gates = [r for r in journal if r.kind == "wait" and (r.event_type or "").startswith(
        EVENT_PREFIX) and (gate is None or r.name == gate)]
    last = gates[-1] if gates else None
    if last is not None and (last.state != "waiting" or not finished):
        # Journaled but not open: decided (maybe not taken yet) or past its deadline.
        expired = last.state == "errored" or (
            last.state == "waiting" and last.wake_at is not None
            and last.wake_at <= engine.clock.now())
        why = "timed out" if expired else "was decided already"
        raise ApprovalDecidedError(
            f"approval {last.name!r} of instance {instance_id!r} {why}; a gate takes one "
            "decision")
    if finished:
        assert row is not None
        raise ApprovalNotFoundError(
            f"instance {instance_id!r} is {row.status}: it has no open approvals")
    what = "no open approval" if gate is None else f"no open approval named {gate!r}"
    raise ApprovalNotFoundError(f"instance {instance_id!r} has {what}")


def _check_text(value: Any, what: str) -> None:
    if value is not None and (not isinstance(value, str) or len(value) > 10_000):
        raise InvalidArgumentError(f"{what} must be a string of at most 10,000 characters")
