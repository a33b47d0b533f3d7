"""W(1000x10) on one PostgreSQL with 1, 2 and 4 worker processes: throughput and scaling.

Each round uses a fresh database: 1,000 instances of a 10-step no-op workflow are created,
then N `agentflow worker` processes start together and run them; the time from their start
to the last instance completing gives steps/s. The ratio is against 1 worker in the same
command. Needs a server: `scripts/pg-test-server start` prints a URL.

    python bench/pg_scaling.py --url postgresql://agentflow@127.0.0.1:54329/agentflow \\
        [--instances 1000] [--workers 1 2 4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from _common import environment

import agentflow as af

HERE = Path(__file__).resolve().parent


def fresh_database(admin: str, name: str) -> str:
    import psycopg

    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return admin.rsplit("/", 1)[0] + "/" + name


async def create(url: str, instances: int) -> None:
    async with af.Engine.open(url, worker=False) as engine:
        binding = engine.binding("w10")
        for start in range(0, instances, 500):
            await binding.create_batch([{"id": f"i{n}"} for n in range(
                start, min(instances, start + 500))])


async def completed(url: str) -> int:
    async with af.Engine.open(url, worker=False) as engine:
        return len(await engine.list_instances(workflow="w10", status="complete",
                                               limit=1_000_000))


def run_round(admin: str, workers: int, instances: int) -> dict[str, float]:
    url = fresh_database(admin, f"agentflow_bench_{workers}")
    asyncio.run(create(url, instances))
    command = [sys.executable, "-m", "agentflow.cli", "--db", url, "worker",
               "_scaling_app:APP", "--concurrency", "200", "--poll-interval", "0.05"]
    started = time.perf_counter()
    procs = [subprocess.Popen(command, cwd=HERE, env={**os.environ},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for _ in range(workers)]
    try:
        while asyncio.run(completed(url)) < instances:
            time.sleep(0.1)
            if time.perf_counter() - started > 600:
                raise TimeoutError("the workers did not finish in 10 minutes")
        elapsed = time.perf_counter() - started
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=30)
    return {"workers": workers, "seconds": round(elapsed, 2),
            "steps_per_s": round(instances * 10 / elapsed)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", default=os.environ.get("AGENTFLOW_TEST_PG_URL"))
    parser.add_argument("--instances", type=int, default=1000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    args = parser.parse_args()
    if not args.url:
        sys.exit("pass --url (scripts/pg-test-server start prints one)")
    rounds = [run_round(args.url, n, args.instances) for n in args.workers]
    base = rounds[0]["steps_per_s"]
    for r in rounds:
        r["ratio"] = round(r["steps_per_s"] / base, 2)
    print(json.dumps({"rounds": rounds, "environment": environment()}))


if __name__ == "__main__":
    main()
