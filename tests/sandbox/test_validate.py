"""One test per rejection: the exact diagnostic code, its line, and a hint for the model."""

from __future__ import annotations

import time

import pytest

import sandbox

OK_RUN = "async def run(event, step):\n    return 1\n"


def codes(source: str, **kwargs: object) -> list[str]:
    report = sandbox.validate(source, **kwargs)  # type: ignore[arg-type]
    return [d.code for d in report.errors]


def only(source: str, code: str, line: int | None = None, **kwargs: object) -> sandbox.Diagnostic:
    report = sandbox.validate(source, **kwargs)  # type: ignore[arg-type]
    assert not report.ok
    matching = [d for d in report.errors if d.code == code]
    assert matching, f"expected {code}, got {report.codes}"
    diagnostic = matching[0]
    if line is not None:
        assert diagnostic.line == line
    assert diagnostic.hint and diagnostic.message
    return diagnostic


def test_a_plain_plan_is_accepted() -> None:
    report = sandbox.validate(OK_RUN)
    assert report.ok and report.diagnostics == ()
    assert str(report) == "plan accepted"
    assert len(report.sha256) == 64


def test_syntax_error_has_position() -> None:
    d = only("async def run(event, step):\n    return (1 +\n", "syntax-error")
    assert d.line >= 2


def test_not_text() -> None:
    assert codes(b"async def run(event, step): pass") == ["not-text"]  # type: ignore[arg-type]
    assert codes(None) == ["not-text"]  # type: ignore[arg-type]


def test_too_large() -> None:
    assert codes(OK_RUN + "#" * (sandbox.MAX_SOURCE_BYTES + 1)) == ["too-large"]


@pytest.mark.parametrize("source", [
    OK_RUN + "X = " + "[" * 150 + "]" * 150 + "\n",
    OK_RUN + "X = " + "[" * 5000 + "]" * 5000 + "\n",
    OK_RUN + "X = " + "+".join(["1"] * 5000) + "\n",
    OK_RUN + "X = " + "-" * 100_000 + "1\n",
])
def test_too_deep_is_reported_not_crashed(source: str) -> None:
    start = time.perf_counter()
    report = sandbox.validate(source)
    assert not report.ok
    assert report.codes[0] in ("too-deep", "syntax-error")
    assert time.perf_counter() - start < 5


def test_restricted_names_and_attributes() -> None:
    only(OK_RUN + "def f(x):\n    return x.__class__\n", "restricted", line=4)
    only(OK_RUN + "_secret = 1\n", "restricted", line=3)
    only(OK_RUN + "class A:\n    pass\n", "restricted", line=3)
    only(OK_RUN + "def g():\n    yield 1\n", "restricted", line=4)
    only(OK_RUN + "def f(x):\n    return x.format\n", "restricted", line=4)
    only(OK_RUN + "def f(x):\n    return x.cr_frame\n", "restricted", line=4)


def test_import_not_allowed() -> None:
    d = only("import os\n" + OK_RUN, "import-not-allowed", line=1)
    assert "json" in d.hint
    only("from subprocess import run as r\n" + OK_RUN, "import-not-allowed", line=1)
    only("import os.path\n" + OK_RUN, "import-not-allowed", line=1)
    only("from . import x\n" + OK_RUN, "import-not-allowed", line=1)
    assert sandbox.validate("import json\nfrom math import sqrt\n" + OK_RUN).ok
    assert codes("import json\n" + OK_RUN, allowed_imports=["math"]) == ["import-not-allowed"]


def test_run_missing_not_async_or_wrong_signature() -> None:
    only("def helper():\n    return 1\n", "missing-run")
    only("def run(event, step):\n    return 1\n", "run-not-async", line=1)
    only("async def run(event):\n    return 1\n", "run-signature", line=1)
    only("async def run(event, step, extra=1):\n    return 1\n", "run-signature")
    only("async def run(*args):\n    return 1\n", "run-signature")


@pytest.mark.parametrize("statement", [
    "print('loaded')",
    "X = compute()",
    "for i in range(3):\n    pass",
    "if True:\n    X = 1",
    "while False:\n    pass",
    "try:\n    X = 1\nexcept Exception:\n    pass",
])
def test_module_level_code(statement: str) -> None:
    source = "def compute():\n    return 1\n" + statement + "\n" + OK_RUN
    only(source, "module-level-code")


def test_module_level_constants_and_docstring_are_fine() -> None:
    source = '"""A plan."""\nimport json\nLIMIT = 3\nNAMES = ["a", "b"]\nRATE = 2 ** 10\n'
    assert sandbox.validate(source + OK_RUN).ok


def test_decorators_and_default_calls() -> None:
    only("def deco(f):\n    return f\n@deco\ndef g():\n    return 1\n" + OK_RUN, "decorator", 3)
    only("def h(x=len('ab')):\n    return x\n" + OK_RUN, "default-call", 1)


def test_tool_calls_only_inside_step_bodies() -> None:
    inside = (
        "async def fetch_it(url):\n    return tools.fetch(url)\n"
        "async def run(event, step):\n"
        "    a = await step.do('a', lambda: tools.fetch('x'))\n"
        "    b = await step.do('b', fetch_it)\n"
        "    c = await step.do('c', fn=lambda: tools.fetch('y'))\n"
        "    return [a, b, c]\n"
    )
    assert sandbox.validate(inside, tools=["fetch"]).ok
    outside = "async def run(event, step):\n    return tools.fetch('x')\n"
    d = only(outside, "tool-outside-step", line=2)
    assert "step.do" in d.hint
    helper = "def leak():\n    return tools.fetch('x')\n" + OK_RUN
    only(helper, "tool-outside-step", line=2)


def test_unknown_tool_names_the_granted_ones() -> None:
    source = "async def run(event, step):\n    return await step.do('a', lambda: tools.nope())\n"
    d = only(source, "unknown-tool", tools=["fetch", "deploy"])
    assert "deploy, fetch" in d.hint
    assert sandbox.validate(source).ok  # without a tool list the check is skipped


@pytest.mark.parametrize("call", [
    "random.random()", "uuid.uuid4()", "datetime.datetime.now()", "datetime.date.today()",
    "hash('x')", "id(event)",
])
def test_nondeterminism_outside_steps(call: str) -> None:
    imports = "import random\nimport uuid\nimport datetime\n"
    outside = imports + f"async def run(event, step):\n    return {call}\n"
    only(outside, "nondeterministic-outside-step" if not call.startswith("id") else
         "forbidden-name")
    inside = imports + (
        f"async def run(event, step):\n    return await step.do('v', lambda: str({call}))\n"
    )
    if not call.startswith("id"):
        assert sandbox.validate(inside).ok


def test_nondeterminism_through_from_imports() -> None:
    source = "from random import choice\nfrom datetime import datetime as dt\n" \
        "async def run(event, step):\n    return [choice([1]), dt.now()]\n"
    report = sandbox.validate(source)
    assert [d.code for d in report.errors] == ["nondeterministic-outside-step"] * 2


@pytest.mark.parametrize(("call", "line"), [
    ("await step.do(1, lambda: 1)", 2), ("await step.sleep(None, 5)", 2),
    ("await step.wait_for_event(['x'], type='go')", 2), ("await step.do()", 2),
])
def test_step_names_must_be_strings(call: str, line: int) -> None:
    only(f"async def run(event, step):\n    {call}\n", "step-name-not-string", line)


def test_step_names_from_variables_and_f_strings_are_fine() -> None:
    source = (
        "async def run(event, step):\n    for i in range(3):\n"
        "        await step.do(f'item {i}', lambda: i)\n    name = 'x'\n"
        "    return await step.do(name, lambda: 1)\n"
    )
    assert sandbox.validate(source).ok


def test_bare_except_and_exits_in_finally() -> None:
    only("async def run(event, step):\n    try:\n        pass\n    except:\n        pass\n",
         "bare-except", 4)
    only("async def run(event, step):\n    try:\n        await step.sleep('s', 1)\n"
         "    finally:\n        return 1\n", "finally-exit", 5)


@pytest.mark.parametrize("name", ["eval", "exec", "open", "getattr", "type", "globals", "vars"])
def test_forbidden_builtins(name: str) -> None:
    only(f"async def run(event, step):\n    return {name}\n", "forbidden-name", 2)


def test_report_renders_every_diagnostic_for_the_model() -> None:
    report = sandbox.validate("import os\nasync def run(event):\n    return tools.x()\n")
    text = str(report)
    assert text.startswith("plan rejected:")
    for d in report.errors:
        assert d.code in text and f"line {d.line}" in text


def test_compile_plan_raises_with_the_report() -> None:
    with pytest.raises(sandbox.PlanRejected) as info:
        sandbox.compile_plan("import os\n" + OK_RUN)
    assert info.value.report.codes == ("import-not-allowed",)
    plan = sandbox.compile_plan(OK_RUN)
    assert plan.sha256 == sandbox.validate(OK_RUN).sha256


async def test_augmented_item_assignment_runs_through_the_guards() -> None:
    source = (
        "import collections\nasync def run(event, step):\n    counts = {'a': 1}\n"
        "    counts['a'] += 2\n    tally = collections.Counter()\n    tally['x'] += 1\n"
        "    items = [1, 2]\n    items[0] *= 10\n    return [counts, dict(tally), items]\n"
    )
    run = sandbox.compile_plan(source).load()
    assert await run(None, None) == [{"a": 3}, {"x": 1}, [10, 2]]
    refused = "async def run(event, step):\n    event.payload['x'] += 1\n"
    assert sandbox.validate(refused).ok  # allowed by the rules; the write guard decides
