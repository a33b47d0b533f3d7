"""Workflows that ``agentflow worker`` runs in the multi-process tests, and a producer process.

    agentflow --db URL worker tests.engine._worker_app:<app>      (cwd: the repository root)
    python -m tests.engine._worker_app produce DB PREFIX COUNT PACE

Step bodies append one line per start and one per end to the file named by ``$AF_TEST_LOG``
(``O_APPEND``, one ``write`` per line, so lines from several processes never mix)::

    <start|end> <instance id> <step name> <pid> <wall-clock time> <monotonic time>

``time.monotonic`` is the system-wide ``CLOCK_MONOTONIC`` on Linux, so the monotonic times of
different processes compare.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import agentflow as af

LOG_ENV = "AF_TEST_LOG"

LOAD = "load"
LOAD_CONCURRENCY = 25
LOAD_STEPS = 3
SLOTS = "slots"
LEASE = "lease"
WAKE = "wake"
CRASH = "crash"
CRASH_CONCURRENCY = 10
CRASH_STEPS = 10


def log_line(kind: str, instance_id: str, step: str) -> None:
    line = f"{kind} {instance_id} {step} {os.getpid()} {time.time():.6f} {time.monotonic():.6f}\n"
    fd = os.open(os.environ[LOG_ENV], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


async def body(instance_id: str, step: str, result: Any, seconds: float = 0.0) -> Any:
    """A step body that logs its start and end around ``seconds`` of (async) work."""
    log_line("start", instance_id, step)
    await asyncio.sleep(seconds)
    log_line("end", instance_id, step)
    return result


@dataclass(frozen=True)
class LogLine:
    kind: str
    instance: str
    step: str
    pid: int
    wall: float
    mono: float


def read_log(path: Path) -> list[LogLine]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    out = []
    for line in text.splitlines():
        kind, instance, step, pid, wall, mono = line.split(" ")
        out.append(LogLine(kind, instance, step, int(pid), float(wall), float(mono)))
    return out


# -- load: a few quick steps, and for some instances an event wait ---------------------------
def load_value(n: int, i: int) -> int:
    return n * 10 + i


def load_output(id: str, n: int, wait: bool) -> dict[str, Any]:
    values = [load_value(n, i) for i in range(LOAD_STEPS)]
    if wait:
        values.append(-n)
    return {"id": id, "values": values, "got": {"to": id, "n": n} if wait else None}


async def load(event: af.Event, step: af.Step) -> dict[str, Any]:
    id, n = event.instance_id, event.payload["n"]
    values = []
    for i in range(LOAD_STEPS):
        values.append(
            await step.do(f"s{i}", lambda i=i: body(id, f"s{i}", load_value(n, i), 0.005))
        )
    got = None
    if event.payload["wait"]:
        got = (await step.wait_for_event("go", type="go", timeout="1 hour")).payload
        values.append(await step.do("after", lambda: body(id, "after", -n)))
    return {"id": id, "values": values, "got": got}


def load_app(engine: af.Engine) -> None:
    engine.register(LOAD, load, concurrency=LOAD_CONCURRENCY)


def load_ids(prefix: str, count: int) -> list[tuple[str, int, bool]]:
    """(id, n, waits for an event) of a producer's instances; n is unique per prefix."""
    return [(f"{prefix}{n:04d}", n, n % 3 == 0) for n in range(count)]


async def produce(
    engine: af.Engine, prefix: str, count: int, *, pace: float = 0.0, timeout: float = 30.0,
) -> None:
    """Create ``count`` load instances (half one by one, ten at a time concurrently, half in
    batches of twenty; ``pace`` seconds between groups) and send every waiting one its event:
    half at once (buffered before the wait), half once the instance is seen waiting."""
    binding = engine.binding(LOAD)
    items = load_ids(prefix, count)
    half = count // 2
    senders: list[asyncio.Task[None]] = []

    async def send_when_waiting(instance: af.Instance, n: int) -> None:
        deadline = time.monotonic() + timeout
        while (await instance.status()).status != "waiting":
            if time.monotonic() > deadline:
                raise TimeoutError(f"{instance!r} never waited for its event")
            await asyncio.sleep(0.01)
        await instance.send_event("go", {"to": instance.id, "n": n})

    async def after_create(instance: af.Instance, n: int, wait: bool) -> None:
        if not wait:
            return
        if n % 2 == 0:
            await instance.send_event("go", {"to": instance.id, "n": n})
        else:
            senders.append(asyncio.create_task(send_when_waiting(instance, n)))

    async def one(id: str, n: int, wait: bool) -> None:
        instance = await binding.create(id=id, params={"n": n, "wait": wait})
        await after_create(instance, n, wait)

    async def singles() -> None:
        for start in range(0, half, 10):
            await asyncio.gather(*(one(*item) for item in items[start:min(start + 10, half)]))
            await asyncio.sleep(pace)

    async def batches() -> None:
        for start in range(half, count, 20):
            chunk = items[start:start + 20]
            instances = await binding.create_batch(
                [{"id": id, "params": {"n": n, "wait": wait}} for id, n, wait in chunk]
            )
            for instance, (_, n, wait) in zip(instances, chunk, strict=True):
                await after_create(instance, n, wait)
            await asyncio.sleep(pace)

    await asyncio.gather(singles(), batches())
    await asyncio.wait_for(asyncio.gather(*senders), timeout)


# -- slots: timed steps between sleeps (a sleep frees the slot) ------------------------------
SLOT_ROUNDS = 5


async def slots(event: af.Event, step: af.Step) -> str:
    """Params: ``work`` seconds per step and ``nap`` seconds of sleep between steps."""
    id, work, nap = event.instance_id, event.payload["work"], event.payload["nap"]
    for r in range(SLOT_ROUNDS):
        if r:
            await step.sleep(f"nap{r}", nap)
        await step.do(f"r{r}", lambda r=r: body(id, f"r{r}", r, work))
    return id


SLOTS_APP = {SLOTS: slots}  # a dict app: `agentflow worker --concurrency N` sets the limit


# -- lease: a slow middle step, to stop a worker in ---------------------------------------
async def lease(event: af.Event, step: af.Step) -> dict[str, int]:
    id, hold = event.instance_id, event.payload["hold"]
    before = await step.do("before", lambda: body(id, "before", os.getpid()))
    slow = await step.do("slow", lambda: body(id, "slow", os.getpid(), hold))
    after = await step.do("after", lambda: body(id, "after", os.getpid()))
    return {"before": before, "slow": slow, "after": after}


def lease_app(engine: af.Engine) -> None:
    engine.register(LEASE, lease, concurrency=10)


# -- wake: wait for an event, then one step -------------------------------------------------
async def wake(event: af.Event, step: af.Step) -> Any:
    got = await step.wait_for_event("go", type="go", timeout="1 hour")
    return await step.do("after", lambda: body(event.instance_id, "after", got.payload))


def wake_app(engine: af.Engine) -> None:
    engine.register(WAKE, wake, concurrency=10)


# -- crash: many short sequential steps ------------------------------------------------------
def crash_value(n: int, i: int) -> int:
    return n * 100 + i


async def crash(event: af.Event, step: af.Step) -> dict[str, Any]:
    id, n = event.instance_id, event.payload["n"]
    results = []
    for i in range(CRASH_STEPS):
        name = f"s{i}"
        results.append(
            await step.do(name, lambda name=name, i=i: body(id, name, crash_value(n, i), 0.002))
        )
    return {"instance": id, "results": results}


def crash_app(engine: af.Engine) -> None:
    engine.register(CRASH, crash, concurrency=CRASH_CONCURRENCY)


# -- a producer process ----------------------------------------------------------------------
async def _produce_main(db: str, prefix: str, count: int, pace: float) -> None:
    url = os.environ.get("AGENTFLOW_TEST_DB_URL") or f"sqlite:///{db}"
    async with af.Engine.open(url, worker=False) as engine:
        await produce(engine, prefix, count, pace=pace)


if __name__ == "__main__":
    if len(sys.argv) != 6 or sys.argv[1] != "produce":
        sys.exit("usage: python -m tests.engine._worker_app produce DB PREFIX COUNT PACE")
    asyncio.run(_produce_main(sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5])))
