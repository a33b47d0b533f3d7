"""A worker process for the crash test: ``python -m tests.engine._crash_worker DB LOG STOP``.

It opens the engine on the shared SQLite file ``DB`` with one-second leases, runs the ``crash``
workflow (whose every step body appends ``<instance>:<step>`` to ``LOG``) and exits cleanly
once the file ``STOP`` exists. The test SIGKILLs it at random moments.
"""

from __future__ import annotations

import asyncio
import os
import sys
from functools import partial
from pathlib import Path
from typing import Any

import agentflow as af

WORKFLOW = "crash"
STEPS = 10
LEASE_SECONDS = 1.0
CONCURRENCY = 5
STEP_SECONDS = 0.01

_log: Path | None = None


def step_result(n: int, step: int) -> int:
    return n * 100 + step


async def _body(instance_id: str, step: int, n: int) -> int:
    assert _log is not None, "the log file is set by main()"
    with _log.open("a") as log:
        log.write(f"{instance_id}:s{step}\n")
        log.flush()
    await asyncio.sleep(STEP_SECONDS)
    return step_result(n, step)


async def run(event: af.Event, step: af.Step) -> dict[str, Any]:
    n = event.payload["n"]
    results = []
    for i in range(STEPS):
        results.append(await step.do(f"s{i}", partial(_body, event.instance_id, i, n)))
    return {"instance": event.instance_id, "results": results}


async def main(db: str, log: str, stop: str) -> None:
    global _log
    _log = Path(log)
    async with af.Engine.open(
        os.environ.get("AGENTFLOW_TEST_DB_URL") or f"sqlite:///{db}",
        lease_seconds=LEASE_SECONDS, poll_interval=0.05
    ) as engine:
        engine.register(WORKFLOW, run, concurrency=CONCURRENCY)
        while not Path(stop).exists():
            await asyncio.sleep(0.02)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
