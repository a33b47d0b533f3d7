"""What ``compile_plan`` reuses: the analysis of a ``validate`` of the same text just before
(validate to show the report, then compile, is the documented sequence), and its own
compiled plans. Reuse must never let a plan through that a fresh analysis would reject."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import sandbox
from sandbox import _rules
from sandbox.report import PlanRejected

PLAN = """
async def run(event, step):
    page = await step.do('fetch', lambda: tools.fetch(event))
    return {'page': page, 'n': len(str(page))}
"""


def unique(source: str, tag: str) -> str:
    """A text no earlier test compiled: the caches key on the text."""
    return f"{source}# {tag}\n"


@pytest.fixture
def analyses(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the plan-rule passes (one per analysis of a plan); the real pass still runs."""
    calls: list[int] = []
    real = _rules.check

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(_rules, "check", counting)
    return calls


class InlineStep:
    async def do(self, name: str, fn: Any, **_: Any) -> Any:
        return fn()


def run_plan(plan: sandbox.CompiledPlan, tools: dict[str, Any]) -> Any:
    runner = plan.runner(tools=tools)
    return asyncio.run(runner("https://example.test", InlineStep()))


def test_validate_then_compile_analyses_once(analyses: list[int]) -> None:
    source = unique(PLAN, "once")
    report = sandbox.validate(source, tools=["fetch"])
    assert report.ok
    plan = sandbox.compile_plan(source, tools=["fetch"])
    assert len(analyses) == 1
    assert plan.report == report
    assert run_plan(plan, {"fetch": lambda url: url.upper()}) == {
        "page": "HTTPS://EXAMPLE.TEST", "n": 20}


def test_a_plan_validated_against_tools_compiles_without_naming_them(
        analyses: list[int]) -> None:
    source = unique(PLAN, "no-tools")
    assert sandbox.validate(source, tools=["fetch"]).ok
    plan = sandbox.compile_plan(source)
    assert len(analyses) == 1
    assert plan.report.ok


def test_other_tools_are_checked_again(analyses: list[int]) -> None:
    source = unique(PLAN, "other-tools")
    assert sandbox.validate(source).ok  # no tools named: the unknown-tool check is off
    with pytest.raises(PlanRejected) as rejected:
        sandbox.compile_plan(source, tools=["deploy"])
    assert rejected.value.report.codes == ("unknown-tool",)
    assert len(analyses) == 2


def test_the_analysis_is_handed_over_once(analyses: list[int]) -> None:
    source = unique(PLAN, "handed-once")
    assert sandbox.validate(source).ok
    sandbox.compile_plan(source, allowed_imports=["json"])  # other imports: analysed anew
    assert len(analyses) == 2
    sandbox.compile_plan(source)  # takes the validation's analysis
    sandbox.compile_plan(source)  # the compiled plan, cached
    assert len(analyses) == 2


def test_a_rejected_plan_is_rejected_by_compile_too(analyses: list[int]) -> None:
    source = unique("import os\n" + PLAN, "rejected")
    report = sandbox.validate(source)
    assert report.codes == ("import-not-allowed",)
    with pytest.raises(PlanRejected) as rejected:
        sandbox.compile_plan(source)
    assert rejected.value.report.codes == ("import-not-allowed",)
    assert len(analyses) == 2


def test_only_the_last_few_validations_are_kept(analyses: list[int]) -> None:
    sources = [unique(PLAN, f"kept-{n}") for n in range(10)]
    for source in sources:
        assert sandbox.validate(source).ok
    for source in sources:
        sandbox.compile_plan(source)
    # The last four validations are handed over; the six before them were let go.
    assert len(analyses) == 10 + 6


def test_large_plans_are_not_kept(analyses: list[int]) -> None:
    filler = "\n".join(f"C{n} = {n}" for n in range(8000))
    source = unique(filler + "\n" + PLAN, "large")
    assert len(source) > 64 * 1024
    assert sandbox.validate(source).ok
    sandbox.compile_plan(source)
    assert len(analyses) == 2
