"""Shared helpers for the sandbox attack and benign suites: tools, a host snapshot, and running a
plan in this process through the real engine."""

from __future__ import annotations

import asyncio
import builtins
import errno
import gc
import json
import math
import os
import tempfile
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import agentflow as af
import sandbox
from sandbox.process import SandboxPool
from tests.conftest import drive

SECRET = "top secret canary contents\n"
MARKER = "ESCAPED"
TOOL_NAMES = ("fetch", "afetch", "record", "load")


def plan(text: str) -> str:
    """A plan's source, written indented inside the test module."""
    return textwrap.dedent(text).lstrip("\n")


@dataclass
class ToolBox:
    """The host functions granted to plans, and what they received."""

    docs: Path
    received: list[Any] = field(default_factory=list)

    def fetch(self, url: str) -> dict[str, Any]:
        self.received.append(["fetch", url])
        return {"url": url, "status": 200, "body": f"page at {url}"}

    async def afetch(self, url: str) -> dict[str, Any]:
        self.received.append(["afetch", url])
        await asyncio.sleep(0.001)
        return {"url": url, "status": 200}

    def record(self, *args: Any, **kwargs: Any) -> int:
        self.received.append(["record", list(args), kwargs])
        return len(self.received)

    def load(self, name: str) -> str:
        """A realistic tool: reads a document, and on a miss raises the usual
        ``FileNotFoundError(errno, message, path)``, whose ``filename`` is a ``Path``."""
        self.received.append(["load", name])
        path = self.docs / name
        if not path.exists():
            raise FileNotFoundError(errno.ENOENT, "no such document", path)
        return path.read_text()

    def granted(self) -> dict[str, Callable[..., Any]]:
        return {"fetch": self.fetch, "afetch": self.afetch, "record": self.record,
                "load": self.load}


@cache
def atime_is_reliable() -> bool:
    """Whether reading a file whose atime is older than its mtime moves the atime here."""
    with tempfile.TemporaryDirectory() as d:
        probe = Path(d) / "probe"
        probe.write_text("x")
        st = probe.stat()
        os.utime(probe, ns=(st.st_mtime_ns - 10_000_000_000, st.st_mtime_ns))
        before = probe.stat().st_atime_ns
        probe.read_text()
        return probe.stat().st_atime_ns != before


def _namespace_tables() -> dict[str, dict[str, Any]]:
    from sandbox import _namespaces  # the curated tables plans import from

    return {name: dict(object.__getattribute__(ns, "_names"))
            for name, ns in _namespaces.NAMESPACES.items()}


@dataclass
class Snapshot:
    """What an escaped plan could change in this process or in the test's directory."""

    canary: Path
    root: Path
    content: bytes = b""
    mtime_ns: int = 0
    atime_ns: int = 0
    listing: list[str] = field(default_factory=list)
    environ: dict[str, str] = field(default_factory=dict)
    cwd: str = ""
    builtin_ids: dict[str, int] = field(default_factory=dict)
    tables: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def take(cls, root: Path) -> Snapshot:
        canary = root / "canary.txt"
        canary.write_text(SECRET)
        st = canary.stat()
        # An atime older than the mtime: under relatime any read moves it.
        os.utime(canary, ns=(st.st_mtime_ns - 10_000_000_000, st.st_mtime_ns))
        st = canary.stat()
        return cls(
            canary=canary, root=root, content=SECRET.encode(),
            mtime_ns=st.st_mtime_ns, atime_ns=st.st_atime_ns, listing=_listing(root),
            environ=dict(os.environ), cwd=os.getcwd(),
            builtin_ids={k: id(v) for k, v in vars(builtins).items()},
            tables=_namespace_tables(),
        )

    def assert_untouched(self) -> None:
        st = self.canary.stat()
        assert self.canary.read_bytes() == self.content, "the canary was overwritten"
        assert st.st_mtime_ns == self.mtime_ns, "the canary was written"
        if atime_is_reliable():
            # read_bytes above happens after the stat: compare the stat taken before it.
            assert st.st_atime_ns == self.atime_ns, "the canary was read"
        assert _listing(self.root) == self.listing, "files appeared in the test directory"
        assert dict(os.environ) == self.environ, "os.environ changed"
        assert os.getcwd() == self.cwd, "the working directory changed"
        now = {k: id(v) for k, v in vars(builtins).items()}
        assert now == self.builtin_ids, "the builtins module changed"
        assert _namespace_tables() == self.tables, "a curated namespace changed"
        assert json.loads("[1]") == [1] and math.pi == 3.141592653589793


def _listing(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.name != "engine")


@dataclass
class Outcome:
    stage: str  # "rejected" | "load-failed" | "register-failed" | "ran"
    report: sandbox.Report
    details: af.InstanceDetails | None = None
    printed: list[str] = field(default_factory=list)
    error: BaseException | None = None


async def run_plan(
    source: str, root: Path, *, tools: ToolBox | None = None,
    tool_names: tuple[str, ...] = TOOL_NAMES, timeout: float = 5.0,
) -> Outcome:
    """Validate ``source``; if accepted, run it in this process through a real engine on a
    SQLite file under ``root/engine``, with a fake clock driven to the end."""
    started = time.perf_counter()
    report = sandbox.validate(source, tools=list(tool_names))
    assert time.perf_counter() - started < 5, "validate took too long"
    if not report.ok:
        try:
            sandbox.compile_plan(source, tools=list(tool_names))
        except sandbox.PlanRejected:
            pass
        else:
            raise AssertionError("compile_plan accepted a plan that validate rejected")
        return Outcome("rejected", report)
    box = tools or ToolBox(root / "docs")
    printed: list[str] = []
    compiled = sandbox.compile_plan(source, tools=list(tool_names))
    try:
        runner = compiled.load(tools=box.granted(), print_sink=printed.append)
    except Exception as exc:  # e.g. an import of a name no namespace has
        return Outcome("load-failed", report, printed=printed, error=exc)
    (root / "engine").mkdir(exist_ok=True)
    clock = af.FakeClock()
    async with af.Engine.open(
        f"sqlite:///{root / 'engine' / 'db'}", clock=clock, poll_interval=0.02
    ) as engine:
        try:
            binding = engine.register("p", runner)
        except af.AgentflowError as exc:
            return Outcome("register-failed", report, printed=printed, error=exc)
        instance = await binding.create(params={
            "canary": str(root / "canary.txt"), "dir": str(root), "url": "https://example.com",
        })
        details = await drive(engine, clock, instance, timeout=timeout)
    # Finalise coroutines a hostile plan abandoned half-run now, not while pytest works.
    gc.collect()
    return Outcome("ran", report, details, printed)


# -- the same, with the plan in a sandbox process ---------------------------------------------
async def run_plan_in_pool(
    source: str, root: Path, pool: SandboxPool, *, tools: ToolBox | None = None,
    tool_names: tuple[str, ...] = TOOL_NAMES, timeout: float = 10.0,
) -> Outcome:
    """:func:`run_plan`, but the plan runs in ``pool``'s sandbox processes
    (``pool.runner``) through a real engine on a SQLite file under ``root/engine``."""
    report = sandbox.validate(source, tools=list(tool_names))
    box = tools or ToolBox(root / "docs")
    granted = {name: fn for name, fn in box.granted().items() if name in tool_names}
    if not report.ok:
        try:
            pool.runner(source, tools=granted)
        except sandbox.PlanRejected:
            return Outcome("rejected", report)
        raise AssertionError("SandboxPool.runner accepted a plan that validate rejected")
    printed: list[str] = []
    runner = pool.runner(source, tools=granted, print_sink=printed.append)
    (root / "engine").mkdir(exist_ok=True)
    clock = af.FakeClock()
    async with af.Engine.open(
        f"sqlite:///{root / 'engine' / 'db'}", clock=clock, poll_interval=0.02
    ) as engine:
        try:
            binding = engine.register("p", runner)
        except af.AgentflowError as exc:
            return Outcome("register-failed", report, printed=printed, error=exc)
        instance = await binding.create(params={
            "canary": str(root / "canary.txt"), "dir": str(root), "url": "https://example.com",
        })
        details = await drive(engine, clock, instance, timeout=timeout)
    return Outcome("ran", report, details, printed)


def plain_types(value: Any) -> set[str]:
    """The names of every type inside ``value`` (containers and leaves)."""
    seen: set[str] = set()
    stack = [value]
    while stack:
        item = stack.pop()
        seen.add(type(item).__name__)
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return seen


PLAIN_TYPE_NAMES = frozenset({"dict", "list", "str", "int", "float", "bool", "NoneType"})


def sandbox_workdirs_are_empty(pool: SandboxPool) -> bool:
    """No idle sandbox process left a file in its working directory."""
    return all(not os.listdir(p.workdir) for p in pool._idle if os.path.isdir(p.workdir))
