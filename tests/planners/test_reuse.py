"""Reusing finished steps across plan revisions: the inputs fingerprint, the dry replay, and
the agent loop that re-plans a failed run and reuses what it finished."""

from __future__ import annotations

import functools
import hashlib
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import agentflow as af
import sandbox
from planners import Agent, LLMPlanner, ScriptedChatModel
from planners.reuse import REUSED_PREFIX, AgentStep, DryStep, Seed, finished_steps
from tests.planners.conftest import Calls, approver, bounded, fenced


# -- capturing the step bodies of a compiled plan --------------------------------------------
class Capture:
    """A step that records the bodies it is given and answers from ``results``."""

    def __init__(self, results: dict[str, Any] | None = None) -> None:
        self.results = results or {}
        self.bodies: dict[str, Any] = {}

    async def do(self, name: str, fn: Any, **options: Any) -> Any:
        self.bodies[name] = fn
        return self.results.get(name, {"path": "/w", "body": "text"})

    async def sleep(self, name: str, duration: Any) -> None:
        pass

    async def wait_for_event(self, name: str, *, type: str, timeout: Any = None) -> Any:
        return af.StepEvent(type, {"approved": True}, datetime.now(UTC))


def event(payload: dict[str, Any], instance_id: str = "i-1") -> af.Event:
    return af.Event(payload, datetime.now(UTC), instance_id, "agent")


async def bodies(source: str, payload: dict[str, Any], *, instance_id: str = "i-1",
                 ) -> dict[str, Any]:
    granted = {"fetch": lambda *a: {"body": "x"}, "store": lambda *a: 1}
    run = sandbox.compile_plan(source, tools=list(granted)).load(tools=granted)
    capture = Capture()
    await run(event(payload, instance_id), capture)
    return capture.bodies


async def fingerprints(source: str, payload: dict[str, Any], **kw: Any) -> dict[str, Any]:
    return {name: sandbox.inputs_fingerprint(fn)
            for name, fn in (await bodies(source, payload, **kw)).items()}


PLAN_A = """\
async def run(event, step):
    page = await step.do("fetch", lambda: tools.fetch(event.payload["url"]))
    return await step.do("store", lambda: tools.store(page["body"]))
"""

PLAN_B = """\
# a revised plan: comments and a new first step move everything down


async def run(event, step):
    note = await step.do("note", lambda: tools.store("starting"))

    page = await step.do("fetch", lambda: tools.fetch(event.payload["url"]))
    if note:
        page = page
    return await step.do("store", lambda: tools.store(page["body"]))
"""


# -- the fingerprint -------------------------------------------------------------------------
async def test_same_body_in_two_plans_at_other_lines_has_the_same_fingerprint() -> None:
    a = await fingerprints(PLAN_A, {"url": "http://x"}, instance_id="first")
    b = await fingerprints(PLAN_B, {"url": "http://x"}, instance_id="second-r1")
    assert a["fetch"] is not None and a["store"] is not None
    assert a["fetch"] == b["fetch"]  # the event counts by its payload only
    assert a["store"] == b["store"]
    assert a["fetch"] != a["store"]
    assert b["note"] not in (a["fetch"], a["store"])


async def test_other_payload_other_fingerprint() -> None:
    a = await fingerprints(PLAN_A, {"url": "http://x"})
    b = await fingerprints(PLAN_A, {"url": "http://y"})
    assert a["fetch"] != b["fetch"]


async def test_closure_values_count() -> None:
    source = """\
async def run(event, step):
    n = event.payload["n"] * 2
    return await step.do("store", lambda: tools.store(n))
"""
    one = await fingerprints(source, {"n": 1})
    same = await fingerprints(source, {"n": 1})
    two = await fingerprints(source, {"n": 2})
    assert one["store"] == same["store"]
    assert one["store"] != two["store"]


async def test_other_argument_text_other_fingerprint() -> None:
    a = await fingerprints(PLAN_A, {"url": "u"})
    c = await fingerprints(PLAN_A.replace('tools.store(page["body"])',
                                          'tools.store(page["body"], "-f")'), {"url": "u"})
    assert a["fetch"] == c["fetch"]
    assert a["store"] != c["store"]


async def test_unsupported_captured_object_has_no_fingerprint() -> None:
    source = """\
import re

async def run(event, step):
    pattern = re.compile(event.payload["pattern"])
    return await step.do("store", lambda: tools.store(pattern.pattern))
"""
    assert (await fingerprints(source, {"pattern": "a+"}))["store"] is None


async def test_module_data_globals_count() -> None:
    source = """\
LIMIT = {limit}

async def run(event, step):
    return await step.do("store", lambda: tools.store(LIMIT))
"""
    ten = await fingerprints(source.format(limit=10), {})
    eleven = await fingerprints(source.format(limit=11), {})
    assert ten["store"] is not None and ten["store"] != eleven["store"]


async def test_module_helper_function_counts() -> None:
    source = """\
def label(text):
    return text.{method}()

async def run(event, step):
    return await step.do("store", lambda: tools.store(label("abc")))
"""
    upper = await fingerprints(source.format(method="upper"), {})
    lower = await fingerprints(source.format(method="lower"), {})
    assert upper["store"] != lower["store"]


def test_python_closures_defaults_and_opaque_values() -> None:
    def make(value: Any) -> Any:
        return lambda: value

    assert sandbox.inputs_fingerprint(make(1)) == sandbox.inputs_fingerprint(make(1))
    assert sandbox.inputs_fingerprint(make(1)) != sandbox.inputs_fingerprint(make(2))
    assert sandbox.inputs_fingerprint(make([1, {"a": 2}])) == sandbox.inputs_fingerprint(
        make([1, {"a": 2}]))
    assert sandbox.inputs_fingerprint(make(datetime(2024, 1, 1, tzinfo=UTC))) is not None
    assert sandbox.inputs_fingerprint(make(object())) is None
    assert sandbox.inputs_fingerprint(make({1, 2})) is None
    with open(__file__) as handle:
        assert sandbox.inputs_fingerprint(lambda: handle.read()) is None
    assert sandbox.inputs_fingerprint(len) is None  # a builtin: nothing to look into

    def with_default(x: int = 1) -> int:
        return x

    def other_default(x: int = 2) -> int:
        return x

    assert sandbox.inputs_fingerprint(with_default) != sandbox.inputs_fingerprint(other_default)


def test_empty_cell_has_no_fingerprint() -> None:
    def outer() -> Any:
        body = lambda: later  # noqa: E731
        fingerprint = sandbox.inputs_fingerprint(body)
        later = 1
        return fingerprint

    assert outer() is None


def add(a: int, b: int) -> int:
    return a + b


def test_partial() -> None:
    one = sandbox.inputs_fingerprint(functools.partial(add, 1, b=2))
    assert one is not None
    assert one == sandbox.inputs_fingerprint(functools.partial(add, 1, b=2))
    assert one != sandbox.inputs_fingerprint(functools.partial(add, 2, b=2))
    assert one != sandbox.inputs_fingerprint(functools.partial(add, 1, b=3))
    assert sandbox.inputs_fingerprint(functools.partial(add, object())) is None
    assert sandbox.inputs_fingerprint(functools.partial(len, "abc")) is None


async def test_partial_in_a_plan() -> None:
    source = """\
import functools

async def run(event, step):
    return await step.do("store", functools.partial(tools.store, event.payload["v"]))
"""
    a = await fingerprints(source, {"v": 1})
    assert a["store"] is not None
    assert a["store"] == (await fingerprints(source, {"v": 1}))["store"]
    assert a["store"] != (await fingerprints(source, {"v": 2}))["store"]


# -- dry replay and the agent's step ---------------------------------------------------------
async def test_dry_replay_finds_finished_steps_without_running_bodies() -> None:
    journal = [
        af.StepInfo("fetch", 1, "do", "completed", {"body": "hello"}),
        af.StepInfo("store", 1, "do", "errored", error=af.ErrorInfo("RuntimeError", "x")),
    ]
    ran: list[str] = []

    def refuse(*args: Any) -> Any:
        ran.append("tool")
        raise RuntimeError("no")

    run = sandbox.compile_plan(PLAN_A, tools=["fetch", "store"]).runner(
        tools={"fetch": refuse, "store": refuse})
    seeds = await finished_steps(run, event({"url": "u"}), journal)
    assert list(seeds) == [("fetch", 1)]
    assert seeds[("fetch", 1)].result == {"body": "hello"}
    expected = (await fingerprints(PLAN_A, {"url": "u"}))["fetch"]
    assert seeds[("fetch", 1)].fingerprint == expected
    assert ran == []
    dry = DryStep(journal)
    with pytest.raises(BaseException):  # noqa: B017 - the end of the journal
        await dry.do("store", lambda: 1)


class Inner:
    """The engine's step, as far as AgentStep needs it."""

    def __init__(self) -> None:
        self.ran: list[str] = []
        self.logs: list[str] = []

    async def do(self, name: str, fn: Any, **options: Any) -> Any:
        self.ran.append(name)
        return fn()

    def log(self, text: str) -> None:
        self.logs.append(text)


async def test_agent_step_reuses_matching_seeds_only() -> None:
    body = lambda: "fresh"  # noqa: E731
    other = lambda: "other"  # noqa: E731
    seeds = {("a", 1): Seed(sandbox.inputs_fingerprint(body) or "", "journaled"),
             ("a", 2): Seed("0" * 64, "stale")}
    inner = Inner()
    step = AgentStep(inner, seeds)
    assert step.wants_inputs
    assert await step.do("a", body) == "journaled"
    assert await step.do("a", body) == "fresh"  # 2nd occurrence: other fingerprint
    assert await step.do("a", other) == "other"  # 3rd occurrence: no seed
    assert inner.ran == ["a", "a", "a"]
    assert inner.logs == [f"{REUSED_PREFIX}'a' #1: same name and inputs as in the failed run"]
    assert not AgentStep(inner).wants_inputs


# -- the agent re-plans and reuses -----------------------------------------------------------
FIRST = """\
async def run(event, step):
    page = await step.do("fetch", lambda: tools.fetch(event.payload["url"]))
    words = await step.do("count", lambda: tools.count(page["body"]))
    return await step.do("publish", lambda: tools.publish(words), retries={"limit": 0})
"""
FIXED = FIRST.replace("tools.publish(words)", 'tools.publish(words, "--force")')


def pipeline(calls: Calls, out: Path) -> list[Any]:
    def fetch(url: str) -> dict:
        """Fetch a page."""
        calls.hit("fetch", url)
        return {"body": f"the page at {url} says hello"}

    async def count(text: str) -> int:
        """Count the words of a text."""
        calls.hit("count", text)
        return len(text.split())

    def publish(words: int, flags: str = "") -> str:
        """Publish the count."""
        calls.hit("publish", words, flags)
        if flags != "--force":
            raise RuntimeError("refusing to overwrite: pass '--force'")
        (out / "count.txt").write_text(str(words))
        return f"published {words}"

    return [fetch, count, publish]


@pytest.mark.parametrize("mode", ["in-process", "process"])
async def test_revision_reuses_finished_steps(real_engine: af.Engine, calls: Calls,
                                              tmp_path: Path, mode: str) -> None:
    model = ScriptedChatModel([fenced(FIRST), fenced(FIXED)])
    seen: list[af.InstanceEvent] = []
    drafts: list[Any] = []
    async with Agent(real_engine, LLMPlanner(model), pipeline(calls, tmp_path),
                     tenant_id="acme", sandbox=mode) as agent:  # type: ignore[arg-type]
        result = await bounded(agent.run("count the words", params={"url": "http://a"},
                                         id="job", on_event=seen.append,
                                         on_plan=drafts.append))
        assert result.ok, result.error
        assert result.output == "published 6"
        assert (tmp_path / "count.txt").read_text() == "6"
        # finished steps ran once; the failed one twice (once per plan)
        assert calls.count("fetch") == 1
        assert calls.count("count") == 1
        assert calls.args("publish") == [(6, ""), (6, "--force")]
        assert result.revisions == 1
        assert result.reused_steps == 2
        assert [a.status for a in result.attempts] == ["errored", "complete"]
        assert [a.instance_id for a in result.attempts] == ["job", "job-r1"]
        assert [a.reused_steps for a in result.attempts] == [0, 2]
        assert result.attempts[0].error is not None
        assert "refusing to overwrite" in result.attempts[0].error.message
        assert result.instance.id == "job-r1"
        assert result.rounds == 2
        assert len(drafts) == 2 and drafts[1].source == FIXED

        # the model saw the failed plan, its error and its journal
        assert len(model.calls) == 2
        ask = model.calls[1][1].content
        assert FIRST in ask
        assert "refusing to overwrite" in ask
        assert "- do 'fetch' #1: completed" in ask
        assert "- do 'count' #1: completed -> 6" in ask
        assert "- do 'publish' #1: errored" in ask

        logs = [e.data.get("text", "") for e in seen
                if e.type == "instance.log" and e.instance_id == "job-r1"]
        assert [text for text in logs if text.startswith(REUSED_PREFIX)] == [
            f"{REUSED_PREFIX}'fetch' #1: same name and inputs as in the failed run",
            f"{REUSED_PREFIX}'count' #1: same name and inputs as in the failed run",
        ]
        # the revision's journal holds the reused results
        steps = await result.instance.steps()
        assert [(s.name, s.state, s.result) for s in steps] == [
            ("fetch", "completed", {"body": "the page at http://a says hello"}),
            ("count", "completed", 6),
            ("publish", "completed", "published 6"),
        ]

        first, second = await agent.plan_of("job"), await agent.plan_of("job-r1")
        assert first.source == FIRST and second.source == FIXED
        assert first.provenance is not None and second.provenance is not None
        assert first.provenance.revision_of is None
        assert second.provenance.revision_of == hashlib.sha256(FIRST.encode()).hexdigest()
        assert second.provenance.model == "scripted"
        assert second.provenance.verdict == "valid"


async def test_changed_inputs_are_not_reused(real_engine: af.Engine, calls: Calls,
                                             tmp_path: Path) -> None:
    other_url = FIXED.replace('tools.fetch(event.payload["url"])',
                              'tools.fetch(event.payload["url"] + "?v=2")')
    model = ScriptedChatModel([fenced(FIRST), fenced(other_url)])
    async with Agent(real_engine, LLMPlanner(model), pipeline(calls, tmp_path),
                     sandbox="in-process") as agent:
        result = await bounded(agent.run("count", params={"url": "http://a"}))
    assert result.ok and result.revisions == 1
    assert calls.args("fetch") == [("http://a",), ("http://a?v=2",)]
    # the page changed, so its count did too: nothing was reused
    assert calls.count("count") == 2
    assert result.reused_steps == 0
    assert result.output == "published 6"


async def test_unchanged_step_after_a_changed_one_is_reused(
        real_engine: af.Engine, calls: Calls, tmp_path: Path) -> None:
    first = """\
async def run(event, step):
    a = await step.do("fetch a", lambda: tools.fetch(event.payload["url"]))
    b = await step.do("fetch b", lambda: tools.fetch("http://b"))
    return await step.do("publish", lambda: tools.publish(1), retries={"limit": 0})
"""
    revised = first.replace('tools.fetch(event.payload["url"])', 'tools.fetch("http://c")')
    revised = revised.replace("tools.publish(1)", 'tools.publish(1, "--force")')
    model = ScriptedChatModel([fenced(first), fenced(revised)])
    async with Agent(real_engine, LLMPlanner(model), pipeline(calls, tmp_path),
                     sandbox="in-process") as agent:
        result = await bounded(agent.run("fetch", params={"url": "http://a"}))
    assert result.ok
    assert calls.args("fetch") == [("http://a",), ("http://b",), ("http://c",)]
    assert result.reused_steps == 1


async def test_renamed_step_is_not_reused(real_engine: af.Engine, calls: Calls,
                                          tmp_path: Path) -> None:
    renamed = FIXED.replace('"fetch"', '"download"')
    model = ScriptedChatModel([fenced(FIRST), fenced(renamed)])
    async with Agent(real_engine, LLMPlanner(model), pipeline(calls, tmp_path),
                     sandbox="in-process") as agent:
        result = await bounded(agent.run("count", params={"url": "http://a"}))
    assert result.ok
    assert calls.count("fetch") == 2
    # count's input (the page) is the same, so it is still reused
    assert calls.count("count") == 1
    assert result.reused_steps == 1


async def test_no_revisions_allowed(real_engine: af.Engine, calls: Calls,
                                    tmp_path: Path) -> None:
    model = ScriptedChatModel([fenced(FIRST), fenced(FIXED)])
    async with Agent(real_engine, LLMPlanner(model), pipeline(calls, tmp_path),
                     sandbox="in-process", max_revisions=0) as agent:
        result = await bounded(agent.run("count", params={"url": "http://a"}, id="once"))
    assert result.status == "errored" and not result.ok
    assert result.error is not None and result.error.name == "RuntimeError"
    assert "refusing to overwrite" in result.error.message
    assert result.revisions == 0 and len(result.attempts) == 1
    assert result.output is None
    assert result.planning_failure is None
    assert len(model.calls) == 1 and model.remaining == 1
    assert calls.count("publish") == 1


async def test_two_revisions_chain_their_reuse(real_engine: af.Engine, calls: Calls,
                                               tmp_path: Path) -> None:
    first = """\
async def run(event, step):
    page = await step.do("fetch", lambda: tools.fetch(event.payload["url"]))
    return await step.do("count", lambda: tools.count(page["missing"]), retries={"limit": 0})
"""
    second = """\
async def run(event, step):
    page = await step.do("fetch", lambda: tools.fetch(event.payload["url"]))
    words = await step.do("count", lambda: tools.count(page["body"]))
    return await step.do("publish", lambda: tools.publish(words), retries={"limit": 0})
"""
    model = ScriptedChatModel([fenced(first), fenced(second), fenced(FIXED)])
    async with Agent(real_engine, LLMPlanner(model), pipeline(calls, tmp_path),
                     sandbox="in-process", max_revisions=2) as agent:
        result = await bounded(agent.run("count", params={"url": "http://a"}, id="chain"))
    assert result.ok, result.error
    assert [a.instance_id for a in result.attempts] == ["chain", "chain-r1", "chain-r2"]
    assert [a.status for a in result.attempts] == ["errored", "errored", "complete"]
    assert [a.reused_steps for a in result.attempts] == [0, 1, 2]
    assert result.revisions == 2 and result.reused_steps == 3
    assert calls.count("fetch") == 1
    assert calls.count("count") == 1
    assert calls.count("publish") == 2
    assert len(model.calls) == 3


async def test_a_revision_the_model_cannot_write(real_engine: af.Engine, calls: Calls,
                                                 tmp_path: Path) -> None:
    bad = "import os\n" + FIXED
    model = ScriptedChatModel([fenced(FIRST), fenced(bad), fenced(bad)])
    async with Agent(real_engine, LLMPlanner(model, max_rounds=2), pipeline(calls, tmp_path),
                     sandbox="in-process") as agent:
        result = await bounded(agent.run("count", params={"url": "http://a"}))
    assert result.status == "errored"
    assert result.revisions == 0
    assert result.planning_failure is not None
    assert "import-not-allowed" in result.planning_failure
    assert model.remaining == 0


async def test_revision_waits_for_a_new_approval(real_engine: af.Engine, calls: Calls,
                                                 tmp_path: Path) -> None:
    """Approvals are not reused: a revised plan asks again before its gated call."""
    first = """\
async def run(event, step):
    page = await step.do("fetch", lambda: tools.fetch(event.payload["url"]))
    decision = await step.wait_for_event("approve", type="approval", timeout="1 hour")
    if not decision.payload.get("approved"):
        return "rejected"
    return await step.do("publish", lambda: tools.publish(3), retries={"limit": 0})
"""
    fixed = first.replace("tools.publish(3)", 'tools.publish(3, "--force")')
    model = ScriptedChatModel([fenced(first), fenced(fixed)])
    seen: list[af.InstanceEvent] = []
    async with Agent(real_engine, LLMPlanner(model), pipeline(calls, tmp_path),
                     sandbox="in-process", needs_approval=["publish"]) as agent:
        result = await bounded(agent.run("publish", params={"url": "http://a"}, id="gated",
                                         on_event=approver(agent, seen=seen)))
    assert result.ok, result.error
    assert result.output == "published 3"
    assert calls.count("fetch") == 1
    assert calls.count("publish") == 2
    approvals = [e.instance_id for e in seen if e.type == "wait.started"]
    assert approvals == ["gated", "gated-r1"]
    assert result.reused_steps == 1
    assert re.fullmatch(r"[0-9a-f]{64}", result.attempts[1].provenance.revision_of or "")


async def test_changed_helper_function_is_not_reused(real_engine: af.Engine, calls: Calls,
                                                     tmp_path: Path) -> None:
    first = """\
def address(url):
    return url

async def run(event, step):
    page = await step.do("fetch", lambda: tools.fetch(address(event.payload["url"])))
    return await step.do("publish", lambda: tools.publish(1), retries={"limit": 0})
"""
    revised = first.replace("return url", 'return url + "?v=2"').replace(
        "tools.publish(1)", 'tools.publish(1, "--force")')
    model = ScriptedChatModel([fenced(first), fenced(revised)])
    async with Agent(real_engine, LLMPlanner(model), pipeline(calls, tmp_path),
                     sandbox="in-process") as agent:
        result = await bounded(agent.run("fetch", params={"url": "http://a"}))
    assert result.ok
    steps = await result.instance.steps()
    assert steps[0].result == {"body": "the page at http://a?v=2 says hello"}
    assert calls.args("fetch") == [("http://a",), ("http://a?v=2",)]
