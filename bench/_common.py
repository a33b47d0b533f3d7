"""Helpers shared by the benchmark scripts (not a benchmark itself)."""

from __future__ import annotations

import asyncio
import os
import platform
import sqlite3
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import agentflow as af


async def wait_until_hibernated(
    engine: af.Engine, workflow: str, *, timeout: float = 600.0, pause: float = 0.005,
) -> float:
    """Wait until no instance of ``workflow`` is queued or running (every one created so far
    has reached its sleep or wait, or finished); return the ``time.perf_counter()`` at which
    that was seen. Uses two ``limit=1`` queries per check, so it is cheap however many
    instances there are."""
    deadline = time.perf_counter() + timeout
    while True:
        busy = False
        for status in ("queued", "running"):
            if await engine.list_instances(workflow=workflow, status=status, limit=1):
                busy = True
                break
        if not busy:
            return time.perf_counter()
        if time.perf_counter() > deadline:
            raise TimeoutError(f"instances of {workflow!r} still busy after {timeout:g} s")
        await asyncio.sleep(pause)


async def count_status(engine: af.Engine, workflow: str, status: str, limit: int) -> int:
    """How many instances of ``workflow`` have ``status`` (counting stops at ``limit``)."""
    return len(await engine.list_instances(workflow=workflow, status=status, limit=limit))


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of an ascending sequence."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), round(q / 100 * len(sorted_values) + 0.5)))
    return sorted_values[rank - 1]


def latency_summary(seconds: Sequence[float]) -> dict[str, float | int]:
    """p50/p90/p99/max (and mean, min) in milliseconds."""
    values = sorted(seconds)
    ms = 1000.0
    return {
        "n": len(values),
        "min_ms": round(values[0] * ms, 3),
        "p50_ms": round(percentile(values, 50) * ms, 3),
        "p90_ms": round(percentile(values, 90) * ms, 3),
        "p99_ms": round(percentile(values, 99) * ms, 3),
        "max_ms": round(values[-1] * ms, 3),
        "mean_ms": round(sum(values) / len(values) * ms, 3),
    }


def rss_kib() -> tuple[int, int]:
    """(VmRSS, VmHWM) of this process in KiB, from /proc/self/status."""
    fields: dict[str, int] = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0])
    return fields["VmRSS"], fields["VmHWM"]


def _git(*args: str) -> str | None:
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def environment() -> dict[str, object]:
    """What the numbers were measured on: Python, SQLite, CPUs, the commit, and whether the
    engine's sources (agentflow/) differ from that commit."""
    changes = _git("status", "--porcelain", "--", "agentflow")
    return {
        "python": platform.python_version(), "sqlite": sqlite3.sqlite_version,
        "cpus": os.cpu_count(), "commit": _git("rev-parse", "--short", "HEAD") or None,
        "engine_modified": None if changes is None else bool(changes),
    }
