"""Fair claims read the heads of the tenants' queues from the front of the queue when they
can (a few rows instead of a seek per tenant). The choice must be exactly the one made by
reading every tenant's head, whatever the queues look like."""

from __future__ import annotations

import random
import sqlite3
import time
from pathlib import Path

import pytest

from agentflow.storage import SqliteStorage, _fair

WF = "wf"


def _choose(conn: sqlite3.Connection, free: int, quota: int | None, *,
            front: bool, monkeypatch: pytest.MonkeyPatch) -> list[tuple[float, int]]:
    with monkeypatch.context() as patch:
        if not front:
            patch.setattr(_fair, "_heads_from_the_front", lambda *args: None)
        return _fair.fair_candidates(conn, WF, free, 1e12, quota)


async def _random_queue(path: Path, rng: random.Random) -> None:
    store = SqliteStorage(path)
    await store.open()
    tenants = [f"t{n:03d}" for n in range(rng.randint(1, 40))]
    at = 1000.0
    for batch in range(rng.randint(1, 30)):
        tenant = rng.choice(tenants)
        size = rng.choice([1, 2, 5, 50, 300]) if rng.random() < 0.9 else 2000  # a flood
        items = [(f"{tenant}-{batch}-{k}", None) for k in range(size)]
        await store.create_instances(WF, items, at, skip_existing=False, tenant=tenant)
        at += rng.random()
    # Some tenants have instances running: claim a few slots, fairly, as a worker would.
    running = rng.randint(0, 20)
    if running:
        await store.claim("w", at, at, at + 60, {WF: running}, {WF: None})
    await store.close()


@pytest.mark.parametrize("seed", range(40))
async def test_reading_the_front_chooses_what_reading_every_head_chooses(
    seed: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    rng = random.Random(seed)
    path = tmp_path / "queue.db"
    await _random_queue(path, rng)
    conn = sqlite3.connect(path)
    try:
        for free in (1, 3, 10, 64):
            for quota in (None, 1, 2, 5):
                fast = _choose(conn, free, quota, front=True, monkeypatch=monkeypatch)
                full = _choose(conn, free, quota, front=False, monkeypatch=monkeypatch)
                assert fast == full, (free, quota)
    finally:
        conn.close()


async def test_a_claim_with_ten_thousand_tenants_reads_a_few_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = SqliteStorage(tmp_path / "many.db")
    await store.open()
    now = time.time()
    for first in range(0, 10_000, 500):
        for n in range(first, first + 500):
            await store.create_instances(WF, [(f"i{n}", None)], now + n * 1e-6,
                                         skip_existing=False, tenant=f"tenant-{n:05d}")
    await store.close()
    conn = sqlite3.connect(tmp_path / "many.db")
    try:
        steps: list[int] = []
        conn.set_progress_handler(lambda: steps.append(1) and 0, 1000)
        fast = _choose(conn, 10, None, front=True, monkeypatch=monkeypatch)
        fast_steps, steps[:] = len(steps), []
        full = _choose(conn, 10, None, front=False, monkeypatch=monkeypatch)
        full_steps = len(steps)
    finally:
        conn.close()
    assert fast == full and len(fast) == 10
    # SQLite's own count of virtual machine steps: the front read does a small fraction of
    # the work of a seek per tenant (a measure of work, not of time).
    assert fast_steps * 20 < full_steps, (fast_steps, full_steps)
