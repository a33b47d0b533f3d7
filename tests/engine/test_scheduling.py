"""Scheduling in one process: prompt wake-ups (a notification, not the poll), and fairness
(woken instances go before new ones, but a new one never waits much longer than the head
start, and woken instances take turns).

Wake-up tests run on the real clock with ``poll_interval=30``, so that only the worker's own
notifications (a poke on ``send_event``, a timer for the next due sleep) can explain a prompt
resume. Fairness is checked on the engine with a fake clock, and on the storage with explicit
times, where a long stream of claims is cheap to simulate.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import agentflow as af
from agentflow.storage import InstanceRow, SqliteStorage
from agentflow.storage.sqlite import WAKE_HEAD_START
from tests.conftest import wait_for

POLL = 30.0  # seconds: far longer than any bound below
PROMPT = 1.0  # seconds: a generous bound for a notification-driven resume

# Step bodies record (instance, what, time.monotonic()) here; reset before every test.
SEEN: list[tuple[str, str, float]] = []
GATES: dict[str, asyncio.Event] = {}


@pytest.fixture(autouse=True)
def _reset() -> None:
    SEEN.clear()
    GATES.clear()


def seen(id: str, what: str) -> str:
    SEEN.append((id, what, time.monotonic()))
    return what


def times(id: str, what: str) -> list[float]:
    return [t for i, w, t in SEEN if (i, w) == (id, what)]


# -- prompt wake-ups -------------------------------------------------------------------------
async def waits_for_events(event: af.Event, step: af.Step) -> list[Any]:
    got = []
    for k in range(3):
        await step.do(f"before {k}", lambda k=k: seen(event.instance_id, f"before {k}"))
        got.append((await step.wait_for_event(f"wait {k}", type="go", timeout="1 hour")).payload)
        await step.do(f"after {k}", lambda k=k: seen(event.instance_id, f"after {k}"))
    return got


async def test_send_event_resumes_a_waiting_instance_at_once_not_at_the_next_poll(
    db_url: str,
) -> None:
    async with af.Engine.open(db_url, poll_interval=POLL) as engine:
        instance = await engine.register("events", waits_for_events).create(id="e1")
        await wait_for(instance, "waiting", timeout=PROMPT)  # a create pokes the worker too
        latencies = []
        for k in range(3):
            if k:
                await wait_for(instance, "waiting", timeout=PROMPT)
            await asyncio.sleep(0.05)  # the worker is back in its 30 s wait
            sent = time.monotonic()
            await instance.send_event("go", {"k": k})
            await wait_for(instance, "waiting", "complete", timeout=PROMPT + 1)
            (resumed,) = times("e1", f"after {k}")
            latencies.append(resumed - sent)
        details = await wait_for(instance, "complete", timeout=PROMPT)
    assert details.output == [{"k": 0}, {"k": 1}, {"k": 2}]
    assert max(latencies) < PROMPT, latencies


async def naps(event: af.Event, step: af.Step) -> str:
    for k in range(event.payload["naps"]):
        await step.do(f"before {k}", lambda k=k: seen(event.instance_id, f"before {k}"))
        await step.sleep(f"nap {k}", event.payload["seconds"])
    await step.do("done", lambda: seen(event.instance_id, "done"))
    return event.instance_id


async def test_a_due_sleep_resumes_on_its_timer_not_at_the_next_poll(db_url: str) -> None:
    async with af.Engine.open(db_url, poll_interval=POLL) as engine:
        binding = engine.register("naps", naps)
        instance = await binding.create(id="s1", params={"naps": 3, "seconds": 0.05})
        details = await wait_for(instance, "complete", "errored", timeout=3 * PROMPT)
    assert details.status == "complete", details.error
    marks = [*(times("s1", f"before {k}")[0] for k in range(3)), times("s1", "done")[0]]
    gaps = [b - a for a, b in itertools.pairwise(marks)]
    assert all(0.05 <= gap < PROMPT for gap in gaps), gaps


async def test_a_sleep_that_falls_due_during_a_slow_read_still_wakes_at_once(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The worker claims, then reads the next wake time. A sleep short enough to fall due
    # between the two (a slow store, a busy machine) was taken for one waiting for a slot,
    # and slept until the next poll. Make the read slower than the sleep.
    async with af.Engine.open(db_url, poll_interval=POLL) as engine:
        storage = engine._storage
        read = storage.next_wake

        async def slow_next_wake(workflows: Any) -> float | None:
            when = await read(workflows)
            if when is not None:
                await asyncio.sleep(0.1)  # answered before the sleep fell due, arrives after
            return when

        monkeypatch.setattr(storage, "next_wake", slow_next_wake)
        instance = await engine.register("naps", naps).create(
            id="slow", params={"naps": 3, "seconds": 0.02}
        )
        details = await wait_for(instance, "complete", "errored", timeout=3 * PROMPT)
    assert details.status == "complete", details.error


async def test_a_short_sleep_wakes_on_time_while_a_later_timer_is_pending(db_url: str) -> None:
    async with af.Engine.open(db_url, poll_interval=POLL) as engine:
        binding = engine.register("naps", naps)
        long = await binding.create(id="long", params={"naps": 1, "seconds": 5})
        await wait_for(long, "waiting", timeout=PROMPT)
        await asyncio.sleep(0.05)  # the worker now waits for the long sleeper's timer
        short = await binding.create(id="short", params={"naps": 1, "seconds": 0.05})
        await wait_for(short, "complete", timeout=PROMPT)
        assert (await long.status()).status == "waiting"
    gap = times("short", "done")[0] - times("short", "before 0")[0]
    assert 0.05 <= gap < PROMPT, gap


async def times_out(event: af.Event, step: af.Step) -> str:
    seen(event.instance_id, "start")
    try:
        await step.wait_for_event("wait", type="never", timeout=0.05)
    except af.WorkflowTimeoutError:
        return str(await step.do("timed out", lambda: seen(event.instance_id, "timed out")))
    return "event"


async def test_an_event_wait_times_out_on_its_timer_not_at_the_next_poll(db_url: str) -> None:
    async with af.Engine.open(db_url, poll_interval=POLL) as engine:
        instance = await engine.register("timeouts", times_out).create(id="t1")
        details = await wait_for(instance, "complete", "errored", timeout=PROMPT)
    assert (details.status, details.output) == ("complete", "timed out")
    gap = times("t1", "timed out")[0] - times("t1", "start")[0]
    assert 0.05 <= gap < PROMPT, gap


# -- fairness on the engine, with a fake clock -----------------------------------------------
async def blocked() -> None:
    await GATES["block"].wait()


async def contender(event: af.Event, step: af.Step) -> str:
    id, how = event.instance_id, event.payload["how"]
    if how == "event":
        await step.do("first", lambda: seen(id, "first"))
        await step.wait_for_event("wait", type="go", timeout="1 day")
    elif how == "timer":
        await step.do("first", lambda: seen(id, "first"))
        await step.sleep("nap", event.payload["nap"])
    elif how == "block":
        await step.do("block", blocked)
    await step.do("run", lambda: seen(id, "run"))
    return id


@pytest.mark.parametrize("how", ["event", "timer"])
@pytest.mark.parametrize(
    ("woken_after", "first"),
    [
        pytest.param(30.0, "woken", id="woken-within-head-start-goes-first"),
        pytest.param(WAKE_HEAD_START + 30.0, "new", id="new-waiting-longer-goes-first"),
    ],
)
async def test_the_one_free_slot_goes_to_the_woken_instance_unless_a_new_one_waited_longer(
    db_url: str, how: str, woken_after: float, first: str,
) -> None:
    """One slot, held by a blocker. A new instance is queued at start + 1; another instance
    is woken (by an event or its timer) at start + ``woken_after``. When the slot frees, the
    woken one goes first only if the new one has not waited longer than the head start."""
    GATES["block"] = asyncio.Event()
    clock = af.FakeClock()
    start = clock.now()
    async with af.Engine.open(db_url, clock=clock, poll_interval=0.05) as engine:
        binding = engine.register("fair", contender, concurrency=1)
        woken = await binding.create(id="woken", params={"how": how, "nap": woken_after})
        await wait_for(woken, "waiting")
        blocker = await binding.create(id="blocker", params={"how": "block"})
        await wait_for(blocker, "running")
        await clock.advance(1)
        new = await binding.create(id="new", params={"how": "new"})
        try:
            await asyncio.wait_for(clock.set(start + woken_after), 5)
        except TimeoutError:
            raise AssertionError(
                "clock.set() did not return within 5 s: timers kept coming due"
            ) from None
        if how == "event":
            await woken.send_event("go")
        await asyncio.sleep(0.1)  # polls and pokes: nothing may start while the slot is held
        # a due sleeper stays 'waiting' until a worker claims it
        expected = ["queued" if how == "event" else "waiting", "queued"]
        assert [(await i.status()).status for i in (woken, new)] == expected
        assert [r for _, r, _ in SEEN] == ["first"]
        GATES["block"].set()
        for instance in (blocker, woken, new):
            assert (await wait_for(instance, "complete", "errored")).status == "complete"
    order = [id for id, what, _ in SEEN if what == "run"]
    assert order == ["blocker", first, "new" if first == "woken" else "woken"]


# -- fairness on the storage, with explicit times --------------------------------------------
T0 = 10_000.0  # engine clock
L0 = 50_000.0  # wall clock, for leases
WF = "wf"


@pytest.fixture
async def storage(tmp_path: Path) -> AsyncIterator[SqliteStorage]:
    store = SqliteStorage(tmp_path / "store.db")
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def claim(storage: SqliteStorage, now: float, limit: int) -> list[InstanceRow]:
    return await storage.claim("w", now, L0, L0 + 30, {WF: limit})


def owner(row: InstanceRow) -> str:
    assert row.owner is not None
    return row.owner


@pytest.mark.parametrize("how", ["event", "timer"])
@pytest.mark.parametrize(
    ("woken_after", "first"),
    [(0.0, "x"), (30.0, "x"), (WAKE_HEAD_START - 1, "x"),
     (WAKE_HEAD_START + 1, "n"), (WAKE_HEAD_START + 30, "n"), (3600.0, "n")],
)
async def test_the_head_start_of_a_woken_instance_is_exactly_the_configured_one(
    storage: SqliteStorage, how: str, woken_after: float, first: str,
) -> None:
    """x has run before; n is new, queued since T0; x is woken at T0 + woken_after (by an
    event, or by its timer). With one free slot, x goes first iff it woke less than the head
    start after n was queued."""
    (x,) = await storage.create_instances(WF, [("x", None)], T0 - 500, skip_existing=False)
    (run,) = await claim(storage, T0 - 500, 1)
    wake_at = T0 + woken_after if how == "timer" else None
    types = ["go"] if how == "event" else []
    assert await storage.suspend(x.iid, owner(run), T0 - 499, wake_at, types, []) == "waiting"
    await storage.create_instances(WF, [("n", None)], T0, skip_existing=False)
    if how == "event":
        await storage.deliver_event(x.iid, "go", None, T0 + woken_after)
    now = T0 + woken_after + 1
    (claimed,) = await claim(storage, now, 1)
    assert claimed.id == first
    (second,) = await claim(storage, now, 2)  # the other one comes next
    assert second.id == ("n" if first == "x" else "x")


async def test_a_stream_of_woken_instances_holds_a_new_one_back_for_the_head_start_only(
    storage: SqliteStorage,
) -> None:
    """Six instances that are woken again as soon as they hibernate compete for two slots,
    one claim round per second. New instances queued in the middle of the stream wait for the
    head start (the woken ones are always ahead until then), and not much longer; the woken
    ones take turns."""
    limit, churners, late = 2, 6, ("n0", "n1")
    rows = await storage.create_instances(
        WF, [(f"c{k}", None) for k in range(churners)], T0 - 1000, skip_existing=False
    )
    # Each churner runs once and hibernates waiting for 'go'; a 'go' that is never consumed
    # makes every later hibernation end at once: from then on it is re-woken continuously.
    for row in await claim(storage, T0 - 1000, churners):
        await storage.suspend(row.iid, owner(row), T0 - 999, None, ["go"], [])
    for row in rows:
        await storage.deliver_event(row.iid, "go", None, T0 - 1)

    new_at = T0 + 10
    claimed_at: dict[str, float] = {}
    runs: Counter[str] = Counter()
    for second in range(int(WAKE_HEAD_START) + 40):
        now = T0 + second
        if now == new_at:
            await storage.create_instances(WF, [(i, None) for i in late], now, skip_existing=False)
        claimed = await claim(storage, now, limit)
        assert len(claimed) == limit  # there is always something runnable
        for row in claimed:
            runs[row.id] += 1
            claimed_at.setdefault(row.id, now)
            if row.id in late:
                await storage.finish(row.iid, owner(row), now, "complete", "1", None, [])
            else:
                status = await storage.suspend(row.iid, owner(row), now, None, ["go"], [])
                assert status == "queued"  # woken again at once
    waited = [claimed_at[i] - new_at for i in late]
    assert all(WAKE_HEAD_START <= w <= WAKE_HEAD_START + churners / limit + 1 for w in waited), (
        waited
    )
    # the woken ones took turns: one claim round each in every few seconds
    counts = [runs[f"c{k}"] for k in range(churners)]
    assert max(counts) - min(counts) <= 1, counts


# -- round-robin on the engine, real clock ---------------------------------------------------
ROUNDS = 12
SPINNERS = 6


async def spinner(event: af.Event, step: af.Step) -> int:
    await step.wait_for_event("start", type="start", timeout="1 hour")
    for r in range(ROUNDS):
        await step.do(f"round {r}", lambda r=r: seen(event.instance_id, f"round {r}"))
        await step.sleep(f"nap {r}", 0.001)
    return ROUNDS


async def test_instances_that_wake_over_and_over_take_turns_for_few_slots(db_url: str) -> None:
    """Six instances that sleep 1 ms between steps want more than the two slots: due
    sleepers queue, and they go in the order they woke. None of them races ahead while
    another waits: the rounds done by any two instances never differ by much."""
    async with af.Engine.open(db_url, poll_interval=0.05) as engine:
        binding = engine.register("spin", spinner, concurrency=2)
        instances = await binding.create_batch([{"id": f"p{k}"} for k in range(SPINNERS)])
        # every one has run once (so none is new) and waits; then all go at once
        for instance in instances:
            await wait_for(instance, "waiting")
        await asyncio.gather(*(i.send_event("start") for i in instances))
        for instance in instances:
            details = await wait_for(instance, "complete", "errored", timeout=20)
            assert details.status == "complete", details.error
    done: Counter[str] = Counter()
    spread = 0
    for id, _, _ in sorted(SEEN, key=lambda s: s[2]):
        done[id] += 1
        if len(done) == SPINNERS:
            spread = max(spread, max(done.values()) - min(done.values()))
    assert sum(done.values()) == ROUNDS * SPINNERS
    assert spread <= 2, spread


# -- a due instance that waits for a slot ----------------------------------------------------
async def sleeps_or_blocks(event: af.Event, step: af.Step) -> str:
    if event.payload == "block":
        await step.do("block", blocked)
    else:
        await step.sleep("nap", 0.05)
    return str(event.payload)


async def test_a_due_sleeper_waiting_for_a_slot_does_not_keep_the_worker_busy(
    db_url: str,
) -> None:
    """Both slots are held by blocked steps while a sleeper's timer is due: the worker has
    nothing to do but wait for a slot to free (or for its poll). It must not spin."""
    GATES["block"] = asyncio.Event()
    async with af.Engine.open(db_url, poll_interval=0.5) as engine:
        binding = engine.register("busy", sleeps_or_blocks, concurrency=2)
        sleeper = await binding.create(id="sleeper", params="sleep")
        await wait_for(sleeper, "waiting")
        blockers = [await binding.create(id=f"b{k}", params="block") for k in range(2)]
        for blocker in blockers:
            await wait_for(blocker, "running")
        await asyncio.sleep(0.1)  # the sleeper is due now, and no slot is free
        cpu, wall = time.process_time(), time.monotonic()
        await asyncio.sleep(1.0)
        cpu, wall = time.process_time() - cpu, time.monotonic() - wall
        assert (await sleeper.status()).status == "waiting"
        GATES["block"].set()
        assert (await wait_for(sleeper, "complete")).output == "sleep"
    assert cpu < 0.25 * wall, f"the worker used {cpu:.2f} s of CPU in {wall:.2f} s while idle"
