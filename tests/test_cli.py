"""The ``agentflow`` command, run as a real subprocess on the SQLite file that an engine in
this process is running instances on."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import agentflow as af
from tests.conftest import drive, wait_for

_SCRIPT = Path(sys.executable).parent / "agentflow"
COMMAND = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "agentflow"]
WORKFLOW = "cli-demo"


@dataclass(frozen=True)
class Result:
    code: int
    stdout: str
    stderr: str

    @property
    def lines(self) -> list[str]:
        return self.stdout.splitlines()


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("AGENTFLOW_DB", None)  # --db is always explicit here
    return env


async def start(db_url: str, *args: str, cwd: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *COMMAND, "--db", db_url, *args, cwd=cwd, env=_env(),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )


async def cli(db_url: str, *args: str, cwd: Path, timeout: float = 15.0) -> Result:
    """Run ``agentflow --db db_url *args`` to the end without blocking the engine's loop."""
    proc = await start(db_url, *args, cwd=cwd)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"agentflow {' '.join(args)} still running after {timeout}s") from None
    assert proc.returncode is not None
    return Result(proc.returncode, out.decode(), err.decode())


def _fetch(url: str) -> dict[str, object]:
    return {"url": url, "size": 3}


def _explode() -> None:
    raise ValueError("boom: no route to host")


async def demo(event: af.Event, step: af.Step) -> dict[str, object]:
    data = await step.do("fetch", lambda: _fetch(event.payload["url"]))
    if event.payload.get("fail"):
        await step.do("explode", _explode, retries=af.Retries(limit=0))
    if event.payload.get("wait"):
        got = await step.wait_for_event("approval", type="approve", timeout="1 hour")
        return {"fetched": data, "approved_by": got.payload["by"]}
    return {"fetched": data}


@dataclass(frozen=True)
class Demo:
    engine: af.Engine
    clock: af.FakeClock
    db_url: str
    cwd: Path
    done: af.Instance
    waiting: af.Instance
    failed: af.Instance


@pytest.fixture
async def demo_instances(
    engine: af.Engine, clock: af.FakeClock, db_url: str, db_path: Path,
) -> Demo:
    binding = engine.register(WORKFLOW, demo)
    done = await binding.create(id="done-1", params={"url": "https://a.example"})
    assert (await drive(engine, clock, done)).status == "complete"
    waiting = await binding.create(id="wait-1", params={"url": "https://b.example", "wait": 1})
    await wait_for(waiting, "waiting")
    failed = await binding.create(id="bad-1", params={"url": "https://c.example", "fail": 1})
    assert (await drive(engine, clock, failed)).status == "errored"
    return Demo(engine, clock, db_url, db_path.parent, done, waiting, failed)


# -- list ---------------------------------------------------------------------------------------
async def test_list_shows_every_instance_with_its_status_newest_first(
    demo_instances: Demo,
) -> None:
    d = demo_instances
    result = await cli(d.db_url, "list", cwd=d.cwd)
    assert result.code == 0, result.stderr
    assert [line.split("\t") for line in result.lines] == [
        ["bad-1", WORKFLOW, "errored"],
        ["wait-1", WORKFLOW, "waiting"],
        ["done-1", WORKFLOW, "complete"],
    ]

    only_waiting = await cli(d.db_url, "list", "--status", "waiting", cwd=d.cwd)
    assert only_waiting.code == 0, only_waiting.stderr
    assert only_waiting.lines == [f"wait-1\t{WORKFLOW}\twaiting"]

    # The engine in this process moves an instance on; the next CLI run sees it.
    await d.waiting.send_event("approve", {"by": "ada"})
    assert (await drive(d.engine, d.clock, d.waiting)).status == "complete"
    after = await cli(d.db_url, "list", "--status", "waiting", cwd=d.cwd)
    assert after.code == 0, after.stderr
    assert after.lines == []


async def test_list_json_prints_one_json_object_per_line(demo_instances: Demo) -> None:
    d = demo_instances
    result = await cli(d.db_url, "--json", "list", cwd=d.cwd)
    assert result.code == 0, result.stderr
    records = [json.loads(line) for line in result.lines]
    assert [(r["id"], r["workflow"], r["status"]) for r in records] == [
        ("bad-1", WORKFLOW, "errored"),
        ("wait-1", WORKFLOW, "waiting"),
        ("done-1", WORKFLOW, "complete"),
    ]
    by_id = {r["id"]: r for r in records}
    assert by_id["done-1"]["output"] == {"fetched": {"url": "https://a.example", "size": 3}}
    assert by_id["bad-1"]["error"]["name"] == "ValueError"


# -- status -------------------------------------------------------------------------------------
async def test_status_prints_status_output_and_error_as_json(demo_instances: Demo) -> None:
    d = demo_instances

    done = await cli(d.db_url, "status", "done-1", cwd=d.cwd)
    assert done.code == 0, done.stderr
    record = json.loads(done.stdout)
    assert record["id"] == "done-1"
    assert record["workflow"] == WORKFLOW
    assert record["status"] == "complete"
    assert record["output"] == {"fetched": {"url": "https://a.example", "size": 3}}
    assert record["error"] is None

    failed = await cli(d.db_url, "status", "bad-1", cwd=d.cwd)
    assert failed.code == 0, failed.stderr
    record = json.loads(failed.stdout)
    assert record["status"] == "errored"
    assert record["output"] is None
    assert record["error"] == {"name": "ValueError", "message": "boom: no route to host"}

    waiting = await cli(d.db_url, "--json", "status", "wait-1", cwd=d.cwd)
    assert waiting.code == 0, waiting.stderr
    assert len(waiting.lines) == 1  # --json: one line
    record = json.loads(waiting.lines[0])
    assert (record["status"], record["output"], record["error"]) == ("waiting", None, None)
    # Matches what the engine itself reports.
    details = await d.waiting.status()
    assert record["created_at"] == details.created_at.isoformat()  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("args", "error_name", "fragment"),
    [
        pytest.param(("status", "unknown-id"), "InstanceNotFoundError", "'unknown-id'",
                     id="status-unknown"),
        pytest.param(("events", "unknown-id"), "InstanceNotFoundError", "'unknown-id'",
                     id="events-unknown"),
        pytest.param(("status", "a b"), "InvalidIdError", "'a b'", id="status-bad-id"),
    ],
)
async def test_unknown_or_bad_ids_exit_2_with_the_error_name_on_stderr(
    demo_instances: Demo, args: tuple[str, ...], error_name: str, fragment: str,
) -> None:
    d = demo_instances
    result = await cli(d.db_url, *args, cwd=d.cwd)
    assert result.code == 2
    assert result.stdout == ""
    assert f"{error_name}:" in result.stderr
    assert fragment in result.stderr
    assert "Traceback" not in result.stderr


async def test_an_unsupported_database_url_exits_2(tmp_path: Path) -> None:
    result = await cli("mysql://x", "list", cwd=tmp_path)
    assert result.code == 2
    assert "InvalidArgumentError:" in result.stderr
    assert "mysql://x" in result.stderr
    assert "Traceback" not in result.stderr


# -- events -------------------------------------------------------------------------------------
async def _history(instance: af.Instance) -> list[af.InstanceEvent]:
    return [e async for e in instance.events(follow=False)]


async def test_events_prints_the_history_in_order(demo_instances: Demo) -> None:
    d = demo_instances
    history = await _history(d.done)
    types = [e.type for e in history]
    assert types[0] == "instance.queued"
    assert types[-1] == "instance.completed"

    text = await cli(d.db_url, "events", "done-1", cwd=d.cwd)
    assert text.code == 0, text.stderr
    assert [line.split(" ")[1] for line in text.lines] == types
    assert any(" step.completed 'fetch'" in line for line in text.lines), text.stdout

    as_json = await cli(d.db_url, "--json", "events", "done-1", cwd=d.cwd)
    assert as_json.code == 0, as_json.stderr
    records = [json.loads(line) for line in as_json.lines]
    assert [(r["seq"], r["type"], r["step"]) for r in records] == [
        (e.seq, e.type, e.step) for e in history
    ]
    assert [r["seq"] for r in records] == sorted({r["seq"] for r in records})

    failed = await cli(d.db_url, "--json", "events", "bad-1", cwd=d.cwd)
    assert failed.code == 0, failed.stderr
    last = json.loads(failed.lines[-1])
    assert last["type"] == "instance.errored"
    assert last["data"]["error"] == {"name": "ValueError", "message": "boom: no route to host"}


async def test_events_follow_on_a_finished_instance_exits_at_once(demo_instances: Demo) -> None:
    d = demo_instances
    result = await cli(d.db_url, "events", "done-1", "--follow", cwd=d.cwd, timeout=10.0)
    assert result.code == 0, result.stderr
    assert result.lines[-1].split(" ")[1] == "instance.completed"


async def _readline(proc: asyncio.subprocess.Process, timeout: float) -> str:
    assert proc.stdout is not None
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), timeout)
    except TimeoutError:
        raise AssertionError(f"no output from agentflow events --follow in {timeout}s") from None
    return line.decode()


async def test_events_follow_streams_until_the_instance_completes(
    db_url: str, db_path: Path,
) -> None:
    async def approve(event: af.Event, step: af.Step) -> Any:
        prepared = await step.do("prepare", lambda: "ready")
        got = await step.wait_for_event("approval", type="approve", timeout="1 minute")
        return await step.do("publish", lambda: {"by": got.payload["by"], "was": prepared})

    async with af.Engine.open(db_url, poll_interval=0.05) as engine:
        instance = await engine.register(WORKFLOW, approve).create(id="follow-1")
        await wait_for(instance, "waiting")

        proc = await start(db_url, "--json", "events", "follow-1", "--follow", cwd=db_path.parent)
        try:
            # The history so far, up to the wait.
            seen: list[dict[str, Any]] = []
            while not seen or seen[-1]["type"] != "instance.waiting":
                line = await _readline(proc, 10.0)
                assert line, f"--follow exited early after {seen}"
                seen.append(json.loads(line))
            assert ("wait.started", "approval") in [(r["type"], r["step"]) for r in seen]

            # It keeps following while the instance waits.
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(asyncio.shield(proc.wait()), 1.0)

            await instance.send_event("approve", {"by": "ada"})
            while line := await _readline(proc, 10.0):
                seen.append(json.loads(line))
            code = await asyncio.wait_for(proc.wait(), 10.0)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()

        assert code == 0
        details = await instance.wait(timeout=5.0)
        assert details.status == "complete"
        assert details.output == {"by": "ada", "was": "ready"}
        history = await _history(instance)

    types = [r["type"] for r in seen]
    assert types[-1] == "instance.completed"
    for expected in ("event.received", "wait.completed", "step.completed"):
        assert expected in types[types.index("instance.waiting"):], types
    assert ("step.completed", "publish") in [(r["type"], r["step"]) for r in seen]
    # Every event exactly once, in order, the same as the engine's own history.
    assert [(r["seq"], r["type"], r["step"]) for r in seen] == [
        (e.seq, e.type, e.step) for e in history
    ]
