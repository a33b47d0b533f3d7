"""The main job: an agent plans a release of the sample repository and runs it durably.

The model's plan checks out a copy, installs it (a flaky step that is retried), runs the linter
and the unit tests in parallel, asks a person to approve the deploy, then deploys the build to
a local directory. Interrupt it (Ctrl-C) at any point and start it again: it resumes where it
was; finished steps never run twice.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import agentflow as af
from planners import Agent, LLMPlanner, OpenAIChatModel, ScriptedChatModel, load_model

from .cassette import MODEL, OFFLINE_BASE_URL, replaying
from .progress import Terminal, ask, describe, show_plan, styled, summary
from .release_tools import GATED, ReleaseTools
from .script import GOAL, REPLIES


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m planners.demo",
                                     description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--db", default="sqlite:///agentflow-demo.db",
                        help="the database (default: %(default)s)")
    parser.add_argument("--workdir", default="agentflow-demo", type=Path,
                        help="where checkouts, builds and deploys go (default: %(default)s)")
    parser.add_argument("--version", default="1.4.0", help="the version to release")
    parser.add_argument("--yes", action="store_true", help="approve the deploy automatically")
    parser.add_argument("--fresh", action="store_true",
                        help="forget earlier runs: delete the database and the workdir first")
    parser.add_argument("--model", default=None,
                        help="a real model, e.g. openai:gpt-4.1-mini or ollama:llama3.1, or "
                             "'scripted' (default: the recorded cassette, offline)")
    parser.add_argument("--sandbox", choices=["process", "in-process"], default="process")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.fresh:
        _forget(args.db, args.workdir)
    try:
        return asyncio.run(release(args))
    except KeyboardInterrupt:
        print("\ninterrupted: run the same command again to resume", file=sys.stderr)
        return 130


async def release(args: argparse.Namespace) -> int:
    term = Terminal()
    args.workdir.mkdir(parents=True, exist_ok=True)
    tools = ReleaseTools(args.workdir.resolve())
    offline = args.model is None
    model: Any
    if offline:
        model = OpenAIChatModel(MODEL, base_url=OFFLINE_BASE_URL, api_key="offline")
    elif args.model == "scripted":  # the same replies, without HTTP
        model = ScriptedChatModel(REPLIES, name=f"scripted:{MODEL}")
    else:
        model = load_model(args.model)
    goal = GOAL.format(version=args.version)
    run_id = "release-" + args.version.replace(".", "_")
    async with af.Engine.open(args.db) as engine, Agent(
        engine, LLMPlanner(model), tools.tools(), tenant_id="demo", needs_approval=GATED,
        sandbox=args.sandbox,
    ) as agent:
        term.line(term.style(f"goal: {goal}", "bold"))
        approver = Approver(term, agent, auto=args.yes, db=args.db)

        async def on_event(event: af.InstanceEvent) -> None:
            text = describe(event)
            if text is not None:
                term.line(f"  [{event.instance_id}] " + styled(term, event, text))
            if event.type == "wait.started":
                await approver.maybe_approve(event)

        with replaying() if offline else contextlib.nullcontext():
            result = await agent.run(goal, params={"version": args.version}, id=run_id,
                                     on_event=on_event, on_plan=lambda d: show_plan(term, d))
        summary(term, result, await result.instance.steps())
        return 0 if result.ok and (result.output or {}).get("status") == "released" else 1


class Approver:
    """Answers the plan's approval gate: from the terminal, or at once with --yes."""

    def __init__(self, term: Terminal, agent: Agent, *, auto: bool, db: str) -> None:
        self.term = term
        self.agent = agent
        self.db = db
        # Without a terminal nobody can answer: approve as with --yes (AGENTFLOW_DEMO_PROMPT
        # forces the question, for tests that answer through a pipe).
        interactive = sys.stdin.isatty() or bool(os.environ.get("AGENTFLOW_DEMO_PROMPT"))
        self.auto = auto or not interactive

    async def maybe_approve(self, event: af.InstanceEvent) -> None:
        instance = await self.agent.get(event.instance_id)
        requests = [r for r in await instance.approvals() if r.gate == event.step]
        if not requests:
            return  # not an approval gate, or decided already (history being replayed)
        request = requests[0]
        term = self.term
        term.line(term.style(f"  approval requested: {request.prompt}", "cyan"))
        term.line(term.style("  " + json.dumps(request.data, indent=2).replace("\n", "\n  "),
                             "cyan"))
        if self.auto:
            term.line(term.style("  approved automatically (--yes, or no terminal)", "cyan"))
            approved, by = True, "demo --yes"
        else:
            term.line(term.style(
                f"  (or from another terminal: agentflow --db {self.db} approve "
                f"{event.instance_id} '{request.gate}' --tenant {self.agent.tenant_id})", "dim"))
            answer = await self._answer_or_decided_elsewhere(instance, request.gate)
            if answer is None:
                term.line(term.style("  decided from elsewhere", "cyan"))
                return
            approved, by = answer.strip().lower() in ("y", "yes"), "terminal"
        decide = instance.approve if approved else instance.reject
        try:
            await decide(request.gate, by=by, version=request.version)
        except (af.ApprovalDecidedError, af.ApprovalNotFoundError) as exc:
            term.line(term.style(f"  {exc} (decided elsewhere)", "yellow"))


    async def _answer_or_decided_elsewhere(self, instance: Any, gate: str) -> str | None:
        """The terminal's answer, or None once the gate was decided by someone else (the CLI,
        a notebook) while the question was open."""
        answer = asyncio.ensure_future(ask("  approve? [y/N] "))
        while True:
            done, _ = await asyncio.wait({answer}, timeout=0.5)
            if done and answer.result() is not None:
                return answer.result()
            # No answer yet, or no terminal input at all (end of input): someone else decides.
            if not [r for r in await instance.approvals() if r.gate == gate]:
                answer.cancel()
                return None


def _forget(db: str, workdir: Path) -> None:
    prefix = "sqlite:///"
    if db.startswith(prefix):
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                Path(db[len(prefix):] + suffix).unlink()
    shutil.rmtree(workdir, ignore_errors=True)


