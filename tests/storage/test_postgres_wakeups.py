"""PostgreSQL: a write in one process wakes the workers of the others at once (LISTEN/NOTIFY),
without waiting for their next poll."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

import agentflow as af
from tests.storage.conftest import PostgresBackend


@pytest.fixture
def pg_url(tmp_path: Path) -> object:
    backend = PostgresBackend(tmp_path)  # skips without a server
    yield backend.url
    backend.cleanup()


async def wait_for_go(event: af.Event, step: af.Step) -> object:
    ev = await step.wait_for_event("go", type="go", timeout="1 hour")
    return ev.payload


async def test_an_event_from_another_engine_wakes_the_worker_without_polling(
        pg_url: str) -> None:
    # The worker polls only every 30 s: only a notification can wake it sooner.
    async with af.Engine.open(pg_url, poll_interval=30) as runner, \
            af.Engine.open(pg_url, worker=False) as other:
        flow = runner.register("flow", wait_for_go)
        await asyncio.sleep(0.3)  # the worker's first look at the empty queue
        created = await other.binding("flow").create("x", params=None)
        started = time.monotonic()
        while (await created.status()).status != "waiting":
            assert time.monotonic() - started < 5, "the new instance was not claimed promptly"
            await asyncio.sleep(0.01)
        await created.send_event("go", "now")
        details = await (await flow.get("x")).wait(timeout=5)
        assert details.output == "now"
        assert time.monotonic() - started < 5


async def test_an_unreachable_server_is_a_clear_error() -> None:
    with pytest.raises(af.StorageError, match="cannot connect"):
        async with af.Engine.open("postgresql://nobody@127.0.0.1:9/none"):
            pass
