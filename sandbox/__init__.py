"""Validation and containment of LLM-written plans.

    report = sandbox.validate(source, tools=["fetch"])
    if report.ok:
        plan = sandbox.compile_plan(source)
        run = plan.load(tools={"fetch": fetch})   # in-process: trusted code and tests

This package imports nothing from agentflow or planners.
"""

from .calling import NonRetryableError, calling_step, step_scope
from .fingerprint import inputs_fingerprint
from .plan import CompiledPlan, compile_plan
from .report import Diagnostic, PlanRejected, Report
from .validate import DEFAULT_IMPORTS, MAX_DEPTH, MAX_SOURCE_BYTES, validate

__all__ = [
    "DEFAULT_IMPORTS",
    "MAX_DEPTH",
    "MAX_SOURCE_BYTES",
    "CompiledPlan",
    "Diagnostic",
    "NonRetryableError",
    "PlanRejected",
    "Report",
    "calling_step",
    "compile_plan",
    "inputs_fingerprint",
    "step_scope",
    "validate",
]
