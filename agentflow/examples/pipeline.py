"""A durable release pipeline on the embedded SQLite default, offline.

Run it twice on the same file and the second run finds the first one's instances complete.
It shows: checkpointed steps, a retried flaky step, parallel steps, a durable sleep, an
approval that arrives as an event, and the live history feed.

    python -m agentflow.examples.pipeline [--db sqlite:///agentflow-demo.db]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import sys

import agentflow as af

_flaky_calls = 0


def run_tests(suite: str) -> dict[str, object]:
    digest = hashlib.sha256(suite.encode()).hexdigest()[:8]
    return {"suite": suite, "passed": True, "digest": digest}


async def publish(version: str) -> str:
    """Fails on its first attempt, as a flaky network would."""
    global _flaky_calls
    _flaky_calls += 1
    if _flaky_calls == 1:
        raise ConnectionError("registry unavailable, try again")
    return f"released {version}"


class Release(af.Workflow):
    async def run(self, event: af.Event, step: af.Step) -> dict[str, object]:
        version = event.payload["version"]
        checkout = await step.do("checkout", lambda: {"version": version, "files": 12})
        lint, tests = await step.all(
            step.do("lint", lambda: run_tests("lint")),
            step.do("unit tests", lambda: run_tests("unit")),
        )
        await step.sleep("let the canary settle", "1 second")
        approval = await step.wait_for_event("approval", type="approve", timeout="1 hour")
        released = await step.do(
            "publish", lambda: publish(version),
            retries=af.Retries(limit=3, delay="100 milliseconds", backoff="constant"),
        )
        return {
            "checkout": checkout, "lint": lint, "tests": tests,
            "approved_by": approval.payload["by"], "result": released,
        }


async def approve_when_waiting(instance: af.Instance) -> None:
    """Plays the person who approves: waits until the plan asks, then approves."""
    async for event in instance.events():
        if event.type == "wait.started":
            await instance.send_event("approve", {"by": "ada"})
            return


async def main(db: str) -> int:
    async with af.Engine.open(db) as engine:
        releases = engine.register("release", Release)
        instance = await releases.create(params={"version": "1.4.0"})
        print(f"created {instance.id}", flush=True)
        approver = asyncio.create_task(approve_when_waiting(instance))
        async for event in instance.events():
            step = f" [{event.step}]" if event.step else ""
            print(f"  {event.type}{step}", flush=True)
        await approver
        status = await instance.status()
        print(f"status: {status.status}")
        print(json.dumps(status.output, indent=2))
        return 0 if status.status == af.InstanceStatus.COMPLETE else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default="sqlite:///agentflow-demo.db")
    sys.exit(asyncio.run(main(parser.parse_args().db)))
