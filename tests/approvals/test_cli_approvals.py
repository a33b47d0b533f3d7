"""``agentflow approvals | approve | reject`` run as real subprocesses on the SQLite file an
engine in this process runs instances on: a decision from the terminal releases the instance
here."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import agentflow as af
from agentflow.dispatch import CodeRegistry, Loader, create_dynamic_workflow_entrypoint
from tests.approvals.conftest import at_gate, finished, gated_flow, open_gates
from tests.approvals.test_dispatch_approvals import buying_plan
from tests.dispatch._support import ToolLog, settle
from tests.test_cli import cli

WORKFLOW = "cli-gates"


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[af.Engine]:
    """The real clock: the CLI process decides by the system clock, as in production (a fake
    clock's deadlines would be long past for it)."""
    async with af.Engine.open(db_url, poll_interval=0.05) as engine:
        yield engine


@pytest.fixture
def gates(engine: af.Engine, seen: list[af.Decision]) -> af.WorkflowBinding:
    return engine.register(WORKFLOW, gated_flow(seen))


async def test_list_then_approve_from_another_process(
    engine: af.Engine, gates: af.WorkflowBinding, db_url: str, db_path: Path,
    seen: list[af.Decision],
) -> None:
    cwd = db_path.parent
    instance = await at_gate(gates, "ship-1", target="eu")

    listed = await cli(db_url, "--json", "approvals", cwd=cwd)
    assert listed.code == 0, listed.stderr
    [line] = listed.lines
    record = json.loads(line)
    assert record["instance_id"] == "ship-1" and record["workflow"] == WORKFLOW
    assert record["gate"] == "deploy" and record["count"] == 1
    assert record["prompt"] == "Deploy the build to eu?"
    assert record["data"] == {"target": "eu", "replicas": 3}
    assert record["tenant"] is None and record["version"] is None
    [request] = await engine.approvals()
    assert record["requested_at"] == request.requested_at.isoformat()
    assert record["expires_at"] == request.expires_at.isoformat()  # type: ignore[union-attr]

    text = await cli(db_url, "approvals", cwd=cwd)
    assert text.code == 0, text.stderr
    [row] = text.lines
    assert row.split("\t")[:3] == ["ship-1", WORKFLOW, "deploy"]
    assert row.endswith("Deploy the build to eu?")

    approved = await cli(db_url, "approve", "ship-1", "deploy", "--comment", "from the shell",
                         "--by", "ada", cwd=cwd)
    assert approved.code == 0, approved.stderr
    assert "approved deploy of ship-1 (by ada)" in approved.stdout

    details = await finished(instance)  # released in this process
    assert details.status == "complete", details.error
    assert details.output["comment"] == "from the shell"
    assert details.output["by"] == "ada"
    assert seen[0].approved and seen[0].comment == "from the shell"

    again = await cli(db_url, "approve", "ship-1", "deploy", cwd=cwd)
    assert again.code == 2
    assert again.stdout == ""
    assert "agentflow: ApprovalDecidedError:" in again.stderr
    assert "Traceback" not in again.stderr

    empty = await cli(db_url, "approvals", cwd=cwd)
    assert empty.code == 0 and empty.lines == ["no open approvals"]
    empty_json = await cli(db_url, "--json", "approvals", cwd=cwd)
    assert empty_json.code == 0 and empty_json.stdout == ""


async def test_reject_edit_and_refusals_from_the_cli(
    engine: af.Engine, gates: af.WorkflowBinding, db_url: str, db_path: Path,
) -> None:
    cwd = db_path.parent
    rejected = await at_gate(gates, "rej-1")
    edited = await at_gate(gates, "edit-1")

    bad_data = await cli(db_url, "approve", "edit-1", "--data", "{not json", cwd=cwd)
    assert bad_data.code == 2
    assert "agentflow: InvalidArgumentError: --data must be JSON" in bad_data.stderr
    stale = await cli(db_url, "approve", "edit-1", "--version", "abc123", cwd=cwd)
    assert stale.code == 2 and "agentflow: StaleApprovalError:" in stale.stderr
    unknown_gate = await cli(db_url, "reject", "edit-1", "nope", cwd=cwd)
    assert unknown_gate.code == 2
    assert "agentflow: ApprovalNotFoundError:" in unknown_gate.stderr
    unknown_id = await cli(db_url, "approve", "ghost", cwd=cwd)
    assert unknown_id.code == 2 and "agentflow: InstanceNotFoundError:" in unknown_id.stderr
    assert len(await engine.approvals()) == 2  # nothing was decided

    no = await cli(db_url, "reject", "rej-1", "--comment", "freeze week", "--by", "bob",
                   cwd=cwd)
    assert no.code == 0, no.stderr
    assert "rejected the open gate of rej-1 (by bob)" in no.stdout
    details = await finished(rejected)
    assert details.output == {"outcome": "skipped", "reason": "rejected", "by": "bob",
                              "comment": "freeze week"}

    yes = await cli(db_url, "approve", "edit-1", "--data", '{"target": "staging"}',
                    "--workflow", WORKFLOW, cwd=cwd)
    assert yes.code == 0, yes.stderr
    details = await finished(edited)
    assert details.output["to"] == {"target": "staging"} and details.output["edited"] is True
    assert details.output["by"]  # defaults to the user's name

    events = [e async for e in edited.events(follow=False) if e.type == "approval.decided"]
    assert [e.data["edited"] for e in events] == [True]


@pytest.fixture
async def tenants(engine: af.Engine) -> af.WorkflowBinding:
    loader = Loader(engine, mode="in-process", tools_for=ToolLog().tools_for)
    binding = engine.register("plans", create_dynamic_workflow_entrypoint(loader))
    registry = CodeRegistry(engine)
    await registry.register("acme", "plans", buying_plan("acme"))
    await registry.register("globex", "plans", buying_plan("globex"))
    return binding


async def test_tenant_scoping_on_the_cli(
    engine: af.Engine, tenants: af.WorkflowBinding, db_url: str, db_path: Path,
) -> None:
    from agentflow.dispatch import wrap_workflow_binding

    cwd = db_path.parent
    acme = wrap_workflow_binding(tenants, tenant_id="acme")
    globex = wrap_workflow_binding(tenants, tenant_id="globex")
    mine = await acme.create("po-7", params={"item": "anvil"})
    theirs = await globex.create("po-9", params={"item": "gear"})
    [request] = await open_gates(mine)
    await open_gates(theirs)

    listed = await cli(db_url, "--json", "approvals", "--tenant", "acme", cwd=cwd)
    assert listed.code == 0, listed.stderr
    records = [json.loads(line) for line in listed.lines]
    assert [(r["tenant"], r["gate"], r["version"]) for r in records] == [
        ("acme", "buy", request.version)]

    # globex cannot decide acme's instance, whichever way it names it
    for args in (("--tenant", "globex", "po-7"), ("--tenant", "globex", "acme.po-7")):
        refused = await cli(db_url, "approve", *args, cwd=cwd)
        assert refused.code == 2, args
        assert "agentflow: " in refused.stderr and "Traceback" not in refused.stderr
    assert len(await acme.approvals()) == 1

    ok = await cli(db_url, "approve", "po-7", "buy", "--tenant", "acme", "--version",
                   str(request.version), "--by", "wile", cwd=cwd)
    assert ok.code == 0, ok.stderr
    details = await settle(mine)
    assert details.output["by"] == "wile" and details.output["version"] == request.version
    assert len(await globex.approvals()) == 1


async def test_ids_listed_for_a_tenant_are_the_ids_approve_takes_for_that_tenant(
    engine: af.Engine, tenants: af.WorkflowBinding, db_url: str, db_path: Path,
) -> None:
    from agentflow.dispatch import wrap_workflow_binding

    cwd = db_path.parent
    acme = wrap_workflow_binding(tenants, tenant_id="acme")
    await open_gates(await acme.create("po-1", params={"item": "anvil"}))
    listed = await cli(db_url, "--json", "approvals", "--tenant", "acme", cwd=cwd)
    [record] = [json.loads(line) for line in listed.lines]
    decided = await cli(db_url, "approve", record["instance_id"], "--tenant", "acme",
                        cwd=cwd)
    assert decided.code == 0, decided.stderr
