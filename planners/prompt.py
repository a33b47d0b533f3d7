"""The words the model reads, generated from the real API: the step methods and their
signatures, the sandbox's allowed imports and the granted tools with their schemas."""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import agentflow as af
import sandbox

from .models import Message
from .tools import Tool

APPROVAL_EVENT = "approval"
STEP_METHODS = ("do", "sleep", "sleep_until", "wait_for_event", "wait_for_approval", "all")

_RULES = """\
Rules of durable plans (a validator enforces them; a plan that breaks one is sent back):
1. Write one Python module that defines `async def run(event, step):`. Its inputs are in
   `event.payload` (a dict). Return a JSON value that summarises the outcome.
2. Every side effect and every tool call happens inside a step body:
   `result = await step.do("check out", lambda: tools.checkout(version))`.
   A run replays from the top after every sleep, wait or crash, and finished steps return
   their journaled result without running again, so code outside step bodies must be
   deterministic: no clock, no randomness, no I/O there.
3. Step names are string literals that say what the step does. A name used twice is two
   occurrences of the step; keep names stable when you revise a plan, so finished steps are
   reused.
4. Step results are JSON values (dict, list, str, int, float, bool, None).
5. Risky actions need a person's approval first. Before the step that calls a tool marked
   [needs approval], ask, showing what will happen and with which arguments, and check:
       decision = await step.wait_for_approval(
           "approve deploy", prompt="Deploy build 1.4.0 to production?",
           data={{"tool": "deploy", "args": {{"version": "1.4.0"}}}}, timeout="1 hour")
       if not decision.approved:
           return {{"status": "rejected", "by": decision.by, "reason": decision.reason}}
   The approver may edit the arguments: use decision.data. One approval covers the gated
   tool calls of one step (and its retries). A timeout is a rejection (reason "timeout").
6. Independent steps may run in parallel: `a, b = await step.all(step.do(...), step.do(...))`.
7. Allowed imports: {imports}. No classes, generators, `global`, bare `except:`, or
   names starting with '_'. Catch specific exceptions (e.g. `except Exception as error:`).
8. Reply with the complete module in one ```python code block and nothing else."""


@functools.cache
def step_api() -> str:
    """The step methods a plan may call, with signatures and summaries from agentflow."""
    lines = []
    for name in STEP_METHODS:
        method = getattr(af.Step, name)
        signature = str(inspect.signature(method)).replace("self, ", "").replace("'", "")
        doc = " ".join((inspect.getdoc(method) or "").split())
        lines.append(f"- await step.{name}{signature}\n    {doc}")
    return "\n".join(lines)


def tool_list(tools: Mapping[str, Tool]) -> str:
    if not tools:
        return "(no tools are granted: plans can only compute, sleep and wait)"
    lines = []
    for tool in tools.values():
        gate = " [needs approval]" if tool.needs_approval else ""
        description = " ".join(tool.description.split()) or "(no description)"
        lines.append(f"- tools.{tool.signature()}{gate}\n    {description}\n"
                     f"    arguments schema: {json.dumps(tool.parameters, sort_keys=True)}")
    return "\n".join(lines)


def system_prompt(tools: Mapping[str, Tool],
                  allowed_imports: Iterable[str] = sandbox.DEFAULT_IMPORTS) -> str:
    rules = _RULES.format(approval=APPROVAL_EVENT, imports=", ".join(sorted(allowed_imports)))
    return (
        "You are a planner for agentflow. You write the plan of an agent as Python code; "
        "agentflow validates it and runs it durably: every step is checkpointed and "
        "retried, sleeps and waits cost nothing, and a person approves risky actions.\n\n"
        f"The step API (the `step` argument of run):\n{step_api()}\n"
        "Retries: step.do(..., retries={\"limit\": 3, \"delay\": \"2 seconds\", "
        "\"backoff\": \"exponential\"}); in a step body, raise NonRetryableError(message) "
        "to fail the step at once, without retries.\n\n"
        f"Tools (call them only inside step bodies, as shown):\n{tool_list(tools)}\n\n"
        f"{rules}"
    )


def goal_message(goal: str, context: Mapping[str, Any] | None) -> str:
    text = f"Goal: {goal}"
    if context:
        text += "\n\nevent.payload will be:\n" + json.dumps(dict(context), indent=2,
                                                          sort_keys=True, default=str)
    return text + "\n\nWrite the plan."


def repair_message(report: sandbox.Report) -> str:
    problems = "\n".join(_diagnostic(d) for d in report.diagnostics if d.severity == "error")
    return ("The validator rejected the plan:\n" + problems +
            "\n\nFix every problem and reply with the whole corrected module.")


def revision_message(source: str, error: str, journal: Sequence[af.StepInfo]) -> str:
    steps = "\n".join(_journal_line(s) for s in journal) or "(no step finished)"
    return (
        "The plan below ran and failed.\n\n"
        f"```python\n{source}\n```\n\nError: {error}\n\nJournal of the run:\n{steps}\n\n"
        "Write a revised plan that reaches the goal. Keep the name and the body of every "
        "step that completed unchanged, so its result is reused instead of running it again."
    )


def _diagnostic(d: sandbox.Diagnostic) -> str:
    hint = f" Hint: {d.hint}" if d.hint else ""
    return f"- line {d.line}: [{d.code}] {d.message}.{hint}"


def _journal_line(info: af.StepInfo) -> str:
    line = f"- {info.kind} {info.name!r} #{info.count}: {info.state}"
    if info.error is not None:
        line += f" ({info.error.name}: {info.error.message[:300]})"
    elif info.state == "completed" and info.kind == "do":
        line += f" -> {json.dumps(info.result, default=str)[:300]}"
    return line


_CODE_BLOCK = re.compile(r"```(?:python|py)?[^\n]*\n(.*?)```", re.DOTALL)


def extract_source(text: str) -> str:
    """The plan in the model's answer: the code block that defines run (or the first one,
    or the whole answer when it has no code block)."""
    blocks = _CODE_BLOCK.findall(text)
    for block in blocks:
        if re.search(r"^async\s+def\s+run\s*\(", block, re.MULTILINE):
            return str(block).strip() + "\n"
    if blocks:
        return str(blocks[0]).strip() + "\n"
    return text.strip() + "\n"


def prompt_hash(messages: Sequence[Message]) -> str:
    """sha256 over the conversation that produced the first draft."""
    digest = hashlib.sha256()
    for message in messages:
        digest.update(f"{message.role}\0{message.content}\0".encode())
    return digest.hexdigest()
