"""The agent end to end with a scripted model: plans run for real on a SQLite file, tools have
real effects, runs resume after a restart, and every plan keeps its provenance."""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.tools import tool as lc_tool

import agentflow as af
from planners import (
    Agent,
    AgentResult,
    LLMPlanner,
    PlanDraft,
    PlanRecord,
    ScriptedChatModel,
    Usage,
)
from planners._runtime import _RUNTIMES
from tests.planners.conftest import Calls, bounded, fenced, until_status

NOTES = """\
import json

async def run(event, step):
    name = event.payload["name"]
    path = await step.do("write note", lambda: tools.write_note(name, event.payload["text"]))
    size, listing = await step.all(
        step.do("measure", lambda: tools.measure(path)),
        step.do("list", lambda: tools.list_notes()),
    )
    await step.sleep("settle", 0.05)
    return {"payload": event.payload, "size": size, "listing": listing,
            "summary": json.dumps([name, size])}
"""


def note_tools(calls: Calls, folder: Path) -> list[Any]:
    def write_note(name: str, text: str) -> str:
        """Write a note into the notes folder; returns its path."""
        calls.hit("write_note", name, text)
        path = folder / f"{name}.txt"
        path.write_text(text)
        return str(path)

    async def measure(path: str) -> int:
        """Size of a file in bytes."""
        calls.hit("measure", path)
        await asyncio.sleep(0)
        return Path(path).stat().st_size

    def list_notes() -> list[str]:
        """Names of the notes."""
        calls.hit("list_notes")
        return sorted(p.name for p in folder.glob("*.txt"))

    return [write_note, measure, list_notes]


def check_notes_result(result: AgentResult, calls: Calls, folder: Path) -> None:
    assert result.ok, result.error
    assert result.status == "complete"
    assert (folder / "hello.txt").read_text() == "hi there"
    assert result.output == {
        "payload": {"goal": "write a note", "name": "hello", "text": "hi there"},
        "size": 8, "listing": ["hello.txt"], "summary": '["hello", 8]',
    }
    assert calls.count("write_note") == 1
    assert calls.count("measure") == 1
    assert calls.count("list_notes") == 1
    assert result.revisions == 0 and result.reused_steps == 0
    assert len(result.attempts) == 1 and result.attempts[0].status == "complete"
    assert result.planning_failure is None


@pytest.mark.parametrize("mode", ["in-process", "process"])
async def test_plan_with_plain_callables(real_engine: af.Engine, calls: Calls, tmp_path: Path,
                                         mode: str) -> None:
    folder = tmp_path / "notes"
    folder.mkdir()
    model = ScriptedChatModel([fenced(NOTES)], name="scripted-notes")
    plans: list[PlanDraft] = []
    events: list[str] = []

    async def on_event(event: af.InstanceEvent) -> None:
        events.append(event.type)

    async with Agent(real_engine, LLMPlanner(model), note_tools(calls, folder),
                     tenant_id="writer", sandbox=mode) as agent:  # type: ignore[arg-type]
        result = await bounded(agent.run("write a note",
                                         params={"name": "hello", "text": "hi there"},
                                         id="note-1", on_event=on_event,
                                         on_plan=plans.append))
        check_notes_result(result, calls, folder)
        assert result.goal == "write a note"
        assert result.instance.id == "note-1"
        assert result.rounds == 1
        assert [d.source for d in plans] == [NOTES]
        assert events[0] in ("instance.queued", "instance.started")
        assert events[-1] == "instance.completed"
        assert "sleep.started" in events

        record = await agent.plan_of(result.instance)
        assert isinstance(record, PlanRecord)
        assert record.source == NOTES
        assert record.code.tenant_id == "writer"
        assert record == await agent.plan_of("note-1")
        prov = record.provenance
        assert prov is not None
        assert prov.model == "scripted-notes"
        assert prov.rounds == 1 and prov.verdict == "valid"
        assert prov.revision_of is None
        assert prov.planner == "LLMPlanner"
        assert prov == plans[0].provenance
        assert isinstance(prov.usage, Usage) and prov.usage.output_tokens > 0
        meta = await result.instance.metadata()
        assert meta["agent"]["goal"] == "write a note"
        assert meta["agent"]["reuse_from"] is None
        details = await result.instance.status()
        assert details.params == {"goal": "write a note", "name": "hello", "text": "hi there"}


async def test_plan_with_langchain_tools_and_model(real_engine: af.Engine, calls: Calls,
                                                   tmp_path: Path) -> None:
    folder = tmp_path / "notes"
    folder.mkdir()

    @lc_tool("write-note")
    def write_note(name: str, text: str) -> str:
        """Write a note into the notes folder; returns its path."""
        calls.hit("write_note", name, text)
        path = folder / f"{name}.txt"
        path.write_text(text)
        return str(path)

    @lc_tool
    async def measure(path: str) -> int:
        """Size of a file in bytes."""
        calls.hit("measure", path)
        return Path(path).stat().st_size

    @lc_tool
    def list_notes() -> list[str]:
        """Names of the notes."""
        calls.hit("list_notes")
        return sorted(p.name for p in folder.glob("*.txt"))

    model = FakeListChatModel(responses=[fenced(NOTES)])
    async with Agent(real_engine, LLMPlanner(model), [write_note, measure, list_notes],
                     sandbox="in-process") as agent:
        assert sorted(agent.tools) == ["list_notes", "measure", "write_note"]
        result = await bounded(agent.run("write a note",
                                         params={"name": "hello", "text": "hi there"}))
        check_notes_result(result, calls, folder)
        record = await agent.plan_of(result.instance)
    assert record.provenance is not None
    assert record.provenance.model == "langchain:fake-list-chat-model"
    assert record.provenance.usage is None


async def test_repaired_plan_runs_and_counts_rounds(real_engine: af.Engine, calls: Calls,
                                                    tmp_path: Path) -> None:
    bad = NOTES.replace("import json", "import os")
    model = ScriptedChatModel([fenced(bad), fenced(NOTES)])
    async with Agent(real_engine, LLMPlanner(model), note_tools(calls, tmp_path),
                     sandbox="in-process") as agent:
        result = await bounded(agent.run("write a note",
                                         params={"name": "hello", "text": "hi there"}))
        record = await agent.plan_of(result.instance)
    assert result.ok
    assert result.rounds == 2
    assert record.provenance is not None and record.provenance.rounds == 2
    assert record.source == NOTES


async def test_start_returns_at_once_and_run_follows_it(real_engine: af.Engine, calls: Calls,
                                                        tmp_path: Path) -> None:
    waiting = """\
async def run(event, step):
    decision = await step.wait_for_event("go", type="go", timeout="1 hour")
    return await step.do("write note", lambda: tools.write_note("n", decision.payload["t"]))
"""
    model = ScriptedChatModel([fenced(waiting)])
    async with Agent(real_engine, LLMPlanner(model), note_tools(calls, tmp_path),
                     sandbox="in-process") as agent:
        instance = await agent.start("note later", id="later")
        assert instance.id == "later"
        await until_status(instance, "waiting")
        follow = asyncio.create_task(agent.run("note later", id="later"))
        await instance.send_event("go", {"t": "text"})
        result = await bounded(follow)
    assert result.ok
    assert result.output == str(tmp_path / "n.txt")
    assert len(model.calls) == 1  # run found the instance: no new plan
    assert calls.count("write_note") == 1


async def test_resume_after_restart(db_url: str, calls: Calls, tmp_path: Path) -> None:
    plan = """\
async def run(event, step):
    path = await step.do("write note", lambda: tools.write_note("draft", event.payload["t"]))
    decision = await step.wait_for_event("approve publish", type="approval", timeout="1 hour")
    if not decision.payload.get("approved"):
        return "rejected"
    size = await step.do("measure", lambda: tools.measure(path))
    return {"size": size, "by": decision.payload.get("by")}
"""
    tools = note_tools(calls, tmp_path)
    first_model = ScriptedChatModel([fenced(plan)])
    async with af.Engine.open(db_url, poll_interval=0.05) as engine:  # noqa: SIM117
        async with Agent(engine, LLMPlanner(first_model), tools, tenant_id="acme",
                         needs_approval=["measure"], sandbox="in-process") as agent:
            at_gate = asyncio.Event()

            def on_event(event: af.InstanceEvent) -> None:
                if event.type == "instance.waiting":
                    at_gate.set()

            task = asyncio.create_task(agent.run("publish a draft", params={"t": "abc"},
                                                 id="job-7", on_event=on_event))
            await bounded(at_gate.wait(), 10)
            task.cancel()  # Ctrl-C
            with pytest.raises(asyncio.CancelledError):
                await task
    assert calls.count("write_note") == 1 and calls.count("measure") == 0
    assert len(first_model.calls) == 1

    second_model = ScriptedChatModel([])  # asking it anything would fail
    async with af.Engine.open(db_url, poll_interval=0.05) as engine:  # noqa: SIM117
        async with Agent(engine, LLMPlanner(second_model), tools, tenant_id="acme",
                         needs_approval=["measure"], sandbox="in-process") as agent:
            instance = await agent._binding.get("job-7")
            assert (await instance.status()).status == "waiting"
            resumed = asyncio.create_task(agent.run("publish a draft", params={"t": "abc"},
                                                    id="job-7"))
            await instance.send_event("approval", {"approved": True, "by": "ada"})
            result = await bounded(resumed)
            record = await agent.plan_of("job-7")
    assert result.ok, result.error
    assert result.output == {"size": 3, "by": "ada"}
    assert result.instance.id == "job-7"
    assert second_model.calls == []
    assert calls.count("write_note") == 1
    assert calls.count("measure") == 1
    assert result.rounds == 1 and result.revisions == 0
    assert record.source == plan
    assert record.provenance is not None and record.provenance.verdict == "valid"


async def test_resume_follows_the_newest_revision(db_url: str, calls: Calls,
                                                  tmp_path: Path) -> None:
    """A restart while a revision waits: run(id) follows the revision, the failed first run
    counts as an attempt, and nothing is planned again."""
    first = """\
async def run(event, step):
    path = await step.do("write note", lambda: tools.write_note("n", "abc"))
    return await step.do("measure", lambda: tools.measure(path + ".missing"),
                         retries={"limit": 0})
"""
    second = """\
async def run(event, step):
    path = await step.do("write note", lambda: tools.write_note("n", "abc"))
    await step.wait_for_event("go", type="go", timeout="1 hour")
    return await step.do("measure", lambda: tools.measure(path))
"""
    tools = note_tools(calls, tmp_path)
    async with af.Engine.open(db_url, poll_interval=0.05) as engine:  # noqa: SIM117
        async with Agent(engine, LLMPlanner(ScriptedChatModel([fenced(first),
                                                               fenced(second)])),
                         tools, sandbox="in-process") as agent:
            at_gate = asyncio.Event()

            def on_event(event: af.InstanceEvent) -> None:
                if event.type == "instance.waiting":
                    at_gate.set()

            task = asyncio.create_task(agent.run("measure", id="m", on_event=on_event))
            await bounded(at_gate.wait(), 10)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    async with af.Engine.open(db_url, poll_interval=0.05) as engine:  # noqa: SIM117
        async with Agent(engine, LLMPlanner(ScriptedChatModel([])), tools,
                         sandbox="in-process") as agent:
            resumed = asyncio.create_task(agent.run("measure", id="m"))
            await (await agent._binding.get("m-r1")).send_event("go", {})
            result = await bounded(resumed)
    assert result.ok, result.error
    assert result.output == 3
    assert [a.instance_id for a in result.attempts] == ["m", "m-r1"]
    assert [a.status for a in result.attempts] == ["errored", "complete"]
    assert result.reused_steps == 1
    assert calls.count("write_note") == 1


async def test_provenance_of_a_revision(real_engine: af.Engine, calls: Calls,
                                        tmp_path: Path) -> None:
    first = """\
async def run(event, step):
    return await step.do("measure", lambda: tools.measure("/no/such/file"),
                         retries={"limit": 0})
"""
    second = """\
async def run(event, step):
    path = await step.do("write note", lambda: tools.write_note("n", "abcd"))
    return await step.do("measure", lambda: tools.measure(path))
"""
    model = ScriptedChatModel([fenced(first), fenced(second)], name="planner-x")
    async with Agent(real_engine, LLMPlanner(model), note_tools(calls, tmp_path),
                     sandbox="in-process") as agent:
        result = await bounded(agent.run("measure a note", id="p"))
        one, two = await agent.plan_of("p"), await agent.plan_of("p-r1")
    assert result.ok and result.output == 4
    assert one.provenance is not None and two.provenance is not None
    assert (one.provenance.model, two.provenance.model) == ("planner-x", "planner-x")
    assert one.provenance.verdict == two.provenance.verdict == "valid"
    assert one.provenance.revision_of is None
    assert two.provenance.revision_of == hashlib.sha256(one.source.encode()).hexdigest()
    assert two.provenance.revision_of == hashlib.sha256(first.encode()).hexdigest()
    assert result.attempts[1].provenance == two.provenance
    assert one.code != two.code
    meta = await result.instance.metadata()
    assert meta["agent"]["reuse_from"] == "p"
    assert json.loads(json.dumps(meta["agent"]["provenance"])) == two.provenance.as_dict()


async def test_tenants_are_isolated(real_engine: af.Engine, calls: Calls,
                                    tmp_path: Path) -> None:
    plan = """\
async def run(event, step):
    return await step.do("list", lambda: tools.list_notes())
"""
    tools = note_tools(calls, tmp_path)
    async with Agent(real_engine, LLMPlanner(ScriptedChatModel([fenced(plan)])), tools,
                     tenant_id="a", sandbox="in-process") as a, Agent(
            real_engine, LLMPlanner(ScriptedChatModel([fenced(plan)])), tools[2:],
            tenant_id="b", sandbox="in-process") as b:
        result = await bounded(a.run("list", id="same"))
        assert result.ok
        with pytest.raises(af.InstanceNotFoundError):
            await b.plan_of("same")
        other = await bounded(b.run("list", id="same"))  # the same id, another tenant
        assert other.ok
        assert (await a.plan_of("same")).code.tenant_id == "a"
        assert (await b.plan_of("same")).code.tenant_id == "b"


async def test_agents_of_a_tenant_must_share_tools(real_engine: af.Engine, calls: Calls,
                                                   tmp_path: Path) -> None:
    tools = note_tools(calls, tmp_path)
    model = ScriptedChatModel([])
    async with Agent(real_engine, LLMPlanner(model), tools, tenant_id="t",
                     sandbox="in-process"):
        again = Agent(real_engine, LLMPlanner(model), tools, tenant_id="t",
                      sandbox="in-process")
        await again.close()
        with pytest.raises(af.InvalidArgumentError, match="other tools"):
            Agent(real_engine, LLMPlanner(model), tools[:1], tenant_id="t",
                  sandbox="in-process")
        with pytest.raises(af.InvalidArgumentError, match="sandbox="):
            Agent(real_engine, LLMPlanner(model), tools, tenant_id="u", sandbox="process")


# -- bad inputs ------------------------------------------------------------------------------
async def test_bad_run_arguments(real_engine: af.Engine, calls: Calls, tmp_path: Path) -> None:
    model = ScriptedChatModel([fenced(NOTES)])
    async with Agent(real_engine, LLMPlanner(model), note_tools(calls, tmp_path),
                     sandbox="in-process") as agent:
        for goal in ("", "  "):
            with pytest.raises(af.InvalidArgumentError, match="goal"):
                await agent.run(goal)
        with pytest.raises(af.InvalidArgumentError, match="'goal' key"):
            await agent.run("write", params={"goal": "other"})
        with pytest.raises(af.InvalidArgumentError, match="'goal' key"):
            await agent.start("write", params={"goal": "other"})
        with pytest.raises(af.InvalidArgumentError):
            await agent.run("write", id="not an id!")
    assert model.calls == []


@pytest.mark.parametrize("options", [
    {"max_revisions": -1}, {"max_revisions": True}, {"max_revisions": 1.0},
    {"sandbox": "bogus"}, {"sandbox": None},
])
async def test_bad_agent_options(real_engine: af.Engine, options: dict[str, Any]) -> None:
    with pytest.raises(af.InvalidArgumentError):
        Agent(real_engine, LLMPlanner(ScriptedChatModel([])), [], **options)


async def test_agent_needs_an_engine_and_a_planner(real_engine: af.Engine,
                                                   db_url: str) -> None:
    planner = LLMPlanner(ScriptedChatModel([]))
    for engine in (db_url, None, object()):
        with pytest.raises(af.InvalidArgumentError, match="Engine"):
            Agent(engine, planner, [])  # type: ignore[arg-type]
    with pytest.raises(af.InvalidArgumentError, match="planner"):
        Agent(real_engine, ScriptedChatModel([]), [])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="needs_approval"):
        Agent(real_engine, planner, [], needs_approval=["nothing"])


# -- known bugs ------------------------------------------------------------------------------
async def test_a_second_agent_after_the_first_closed(real_engine: af.Engine, calls: Calls,
                                                     tmp_path: Path) -> None:
    plan = """\
async def run(event, step):
    return await step.do("list", lambda: tools.list_notes())
"""
    tools = note_tools(calls, tmp_path)
    async with Agent(real_engine, LLMPlanner(ScriptedChatModel([fenced(plan)])), tools,
                     sandbox="in-process") as agent:
        assert (await bounded(agent.run("list"))).ok
    async with Agent(real_engine, LLMPlanner(ScriptedChatModel([fenced(plan)])), tools,
                     sandbox="in-process") as agent:
        assert (await bounded(agent.run("list"))).ok


async def test_failed_agent_construction_leaves_no_runtime_user(real_engine: af.Engine) -> None:
    planner = LLMPlanner(ScriptedChatModel([]))
    with pytest.raises(af.InvalidArgumentError):
        Agent(real_engine, planner, [], tenant_id="bad.tenant", sandbox="in-process")
    async with Agent(real_engine, planner, [], tenant_id="good", sandbox="in-process"):
        pass
    runtime = _RUNTIMES[real_engine]["agent"]  # stays registered on the engine, unused
    assert runtime.users == 0 and "bad.tenant" not in runtime.tools
