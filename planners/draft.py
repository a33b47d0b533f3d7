"""What a planner returns: the plan's source, every round that led to it, its provenance."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import sandbox

from .models import Usage


@dataclass(frozen=True)
class PlanAttempt:
    """One round: the source the model wrote and the validator's findings on it."""

    round: int
    source: str
    report: sandbox.Report

    @property
    def ok(self) -> bool:
        return self.report.ok


@dataclass(frozen=True)
class Provenance:
    """Where a plan came from. Every instance the agent creates carries its plan's provenance
    in its dispatch metadata (``await instance.metadata()``)."""

    model: str
    prompt_sha256: str
    rounds: int
    verdict: str  # "valid" or "rejected"
    diagnostics: tuple[str, ...] = ()  # of the final round (warnings when valid)
    usage: Usage | None = None
    planner: str = "llm"
    revision_of: str | None = None  # sha256 of the plan this one revises

    def as_dict(self) -> dict[str, Any]:
        usage = None if self.usage is None else {
            "input_tokens": self.usage.input_tokens, "output_tokens": self.usage.output_tokens,
            "total_tokens": self.usage.total_tokens,
        }
        return {"model": self.model, "prompt_sha256": self.prompt_sha256,
                "rounds": self.rounds, "verdict": self.verdict,
                "diagnostics": list(self.diagnostics), "usage": usage,
                "planner": self.planner, "revision_of": self.revision_of}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Provenance:
        usage = data.get("usage")
        return cls(
            model=str(data["model"]), prompt_sha256=str(data["prompt_sha256"]),
            rounds=int(data["rounds"]), verdict=str(data["verdict"]),
            diagnostics=tuple(data.get("diagnostics") or ()),
            usage=None if not usage else Usage(int(usage["input_tokens"]),
                                               int(usage["output_tokens"])),
            planner=str(data.get("planner", "llm")), revision_of=data.get("revision_of"),
        )


@dataclass(frozen=True)
class PlanDraft:
    """A planner's answer. ``ok`` says whether ``source`` passed validation; when it did not,
    ``failure`` says why and ``attempts`` holds every round."""

    source: str
    provenance: Provenance
    attempts: tuple[PlanAttempt, ...] = field(default=())
    failure: str | None = None

    @property
    def ok(self) -> bool:
        return self.failure is None

    @property
    def rounds(self) -> int:
        """Model answers it took, the first draft included."""
        return self.provenance.rounds

    @property
    def repairs(self) -> int:
        """Rounds after the first draft: how often the plan was sent back."""
        return max(0, self.rounds - 1)

    @property
    def report(self) -> sandbox.Report | None:
        return self.attempts[-1].report if self.attempts else None

    @property
    def sha256(self) -> str:
        import hashlib

        return hashlib.sha256(self.source.encode()).hexdigest()
