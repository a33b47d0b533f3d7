"""What validation says about a plan: line-numbered diagnostics with hints for the model."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal

Severity = Literal["error", "warning"]


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """One finding. ``code`` is stable (tests and repair prompts key on it); ``hint`` says how
    to fix it, written for the model that will repair the plan."""

    code: str
    line: int
    column: int
    message: str
    hint: str
    severity: Severity = "error"

    def __str__(self) -> str:
        return f"line {self.line}, col {self.column}: [{self.code}] {self.message} ({self.hint})"


@dataclass(frozen=True, slots=True)
class Report:
    """The verdict on a plan. ``ok`` is True when there is no error (warnings allowed)."""

    source: str
    diagnostics: tuple[Diagnostic, ...]

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def errors(self) -> tuple[Diagnostic, ...]:
        return tuple(d for d in self.diagnostics if d.severity == "error")

    @property
    def warnings(self) -> tuple[Diagnostic, ...]:
        return tuple(d for d in self.diagnostics if d.severity == "warning")

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.source.encode()).hexdigest()

    @property
    def codes(self) -> tuple[str, ...]:
        return tuple(d.code for d in self.diagnostics)

    def __str__(self) -> str:
        if not self.diagnostics:
            return "plan accepted"
        verdict = "plan accepted with warnings" if self.ok else "plan rejected"
        return "\n".join([f"{verdict}:", *(f"- {d}" for d in self.diagnostics)])


class PlanRejected(Exception):
    """Raised by ``compile_plan`` for a plan that failed validation; carries the report."""

    def __init__(self, report: Report) -> None:
        super().__init__(str(report))
        self.report = report
