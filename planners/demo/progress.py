"""Terminal output for the demo: the plan, each step as it starts, retries and commits, the
approval prompt, and a summary of the journal."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import threading
from collections.abc import Callable
from typing import Any

import agentflow as af
from planners import AgentResult, PlanDraft

_COLORS = {"dim": "2", "bold": "1", "green": "32", "yellow": "33", "red": "31", "cyan": "36"}


class Terminal:
    def __init__(self, stream: Any = None) -> None:
        self.stream = stream or sys.stdout
        self.color = bool(getattr(self.stream, "isatty", lambda: False)())

    def style(self, text: str, *names: str) -> str:
        if not self.color:
            return text
        codes = ";".join(_COLORS[n] for n in names)
        return f"\033[{codes}m{text}\033[0m"

    def line(self, text: str = "") -> None:
        print(text, file=self.stream, flush=True)


def show_plan(term: Terminal, draft: PlanDraft) -> None:
    p = draft.provenance
    usage = f", {p.usage.total_tokens} tokens" if p.usage else ""
    term.line(term.style(f"plan by {p.model}: {p.rounds} round(s){usage}, "
                         f"verdict {p.verdict}", "bold"))
    for attempt in draft.attempts[:-1]:
        codes = ", ".join(sorted(set(attempt.report.codes)))
        term.line(term.style(f"  round {attempt.round} sent back: {codes}", "yellow"))
    for number, text in enumerate(draft.source.rstrip().splitlines(), 1):
        term.line(term.style(f"  {number:3} {text}", "dim"))


def describe(event: af.InstanceEvent) -> str | None:
    """One line for the events worth a line; None for the rest."""
    data = event.data
    name = event.step
    kind = event.type
    if kind == "step.started":
        return f"▸ {name}"
    if kind == "attempt.failed":
        error = data.get("error") or {}
        retry = data.get("retry_in")
        then = f"; retrying in {retry:g} s" if retry is not None else "; no retries left"
        return f"↻ {name}: attempt {data.get('attempt')} failed: {error.get('message')}{then}"
    if kind == "step.completed":
        return f"✓ {name} committed"
    if kind == "step.errored":
        return f"✗ {name} failed: {(data.get('error') or {}).get('message')}"
    if kind == "wait.started":
        if str(data.get("type", "")).startswith("approval:"):
            return f"⏸ {name}: waiting for a person's approval"
        return f"⏸ {name}: waiting for an event of type {data.get('type')!r}"
    if kind == "approval.decided":
        verdict = "approved" if data.get("approved") else "rejected"
        comment = f" ({data['comment']})" if data.get("comment") else ""
        return f"✔ {name}: {verdict} by {data.get('by') or 'someone'}{comment}"
    if kind == "wait.completed":
        return f"▶ {name}: received"
    if kind == "instance.log":
        return f"· {str(data.get('text', '')).rstrip()}"
    if kind in ("instance.started", "instance.completed", "instance.errored",
                "instance.terminated"):
        error = data.get("error")
        return f"{kind}" + (f": {error.get('name')}: {error.get('message')}" if error else "")
    return None


def styled(term: Terminal, event: af.InstanceEvent, text: str) -> str:
    if event.type in ("step.completed", "wait.completed", "instance.completed",
                      "approval.decided"):
        return term.style(text, "green")
    if event.type in ("attempt.failed", "wait.started"):
        return term.style(text, "yellow")
    if event.type in ("step.errored", "instance.errored", "instance.terminated"):
        return term.style(text, "red")
    return text


async def ask(question: str) -> str | None:
    """Read a line from the terminal without blocking the loop; None at end of input. A
    daemon thread, so Ctrl-C ends the process even while the question is open; it reads the
    file descriptor itself (``input()`` would hold sys.stdin's buffer lock, and a process
    that ends while the question is open would abort at interpreter shutdown)."""
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[str | None] = loop.create_future()
    sys.stdout.write(question)
    sys.stdout.flush()

    def read() -> None:
        data = b""
        while not data.endswith(b"\n"):
            try:
                chunk = os.read(0, 1024)
            except OSError:
                chunk = b""
            if not chunk:
                break
            data += chunk
        line = data.decode(errors="replace").rstrip("\r\n") if data else None

        def deliver() -> None:
            if not answer.done():
                answer.set_result(line)

        with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits any more
            loop.call_soon_threadsafe(deliver)

    threading.Thread(target=read, daemon=True).start()
    return await answer


def summary(term: Terminal, result: AgentResult, steps: list[af.StepInfo]) -> None:
    term.line()
    term.line(term.style("journal", "bold"))
    for info in steps:
        took = ""
        if info.started_at and info.finished_at:
            took = f"{(info.finished_at - info.started_at).total_seconds():6.2f} s"
        attempts = f"{info.attempts} attempt(s)" if info.kind == "do" else info.kind
        term.line(f"  {info.name:<16} {info.state:<10} {attempts:<13} {took}")
    for attempt in result.attempts:
        reused = f", reused {attempt.reused_steps} step(s)" if attempt.reused_steps else ""
        term.line(f"  instance {attempt.instance_id}: {attempt.status}{reused}")
    term.line()
    colour = "green" if result.ok else "red"
    term.line(term.style(f"status: {result.status}", "bold", colour))
    if result.error:
        term.line(term.style(f"error: {result.error.name}: {result.error.message}", "red"))
    term.line(json.dumps(result.output, indent=2))


Approver = Callable[[str], Any]
