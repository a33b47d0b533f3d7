"""Several ``agentflow worker`` processes on one SQLite file: load from producers in two
processes, per-workflow slot limits counted across processes, wake-ups from another process,
lease expiry of a stopped worker, and repeated SIGKILLs of workers under load.

Every worker is a real ``agentflow --db URL worker tests.engine._worker_app:<app>`` process
(see ``_worker_app.py``); the test process reads the database file directly.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import agentflow as af
from tests.conftest import rows
from tests.engine import _worker_app as app

ROOT = Path(__file__).resolve().parents[2]
_SCRIPT = Path(sys.executable).parent / "agentflow"
COMMAND = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "agentflow"]
BAD_OUTPUT = ("Traceback", "locked", "Error", "exception")


# -- helpers ---------------------------------------------------------------------------------
async def until(
    check: Callable[[], bool], timeout: float, what: str | Callable[[], str],
    interval: float = 0.01,
) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            about = what() if callable(what) else what
            raise AssertionError(f"timed out after {timeout} s waiting for {about}")
        await asyncio.sleep(interval)


def scalar(db_path: Path, sql: str, *args: object) -> int:
    ((value,),) = rows(db_path, sql, *args)
    assert isinstance(value, int), value
    return value


def status_counts(db_path: Path, workflow: str) -> dict[str, int]:
    return {
        str(status): int(str(n)) for status, n in rows(
            db_path, "SELECT status, count(*) FROM instances WHERE workflow = ? GROUP BY status",
            workflow,
        )
    }


def journal(db_path: Path) -> list[tuple[str, str, int, str, str | None, int]]:
    """(instance id, step, count, state, result, attempts) of every journal record."""
    return [
        (str(id), str(name), int(str(count)), str(state), None if res is None else str(res),
         int(str(attempts)))
        for id, name, count, state, res, attempts in rows(
            db_path,
            "SELECT i.id, s.name, s.count, s.state, s.result, s.attempts FROM steps s "
            "JOIN instances i ON i.iid = s.iid ORDER BY s.seq",
        )
    ]


def body_runs(log: list[app.LogLine]) -> Counter[tuple[str, str]]:
    """How many times the body of each (instance, step) started."""
    return Counter((line.instance, line.step) for line in log if line.kind == "start")


def intervals(log: list[app.LogLine]) -> list[tuple[str, str, int, float, float]]:
    """(instance, step, pid, start, end) of every body that ran to its end (monotonic time)."""
    starts: dict[tuple[str, str, int], float] = {}
    out = []
    for line in log:
        key = (line.instance, line.step, line.pid)
        if line.kind == "start":
            starts[key] = line.mono
        else:
            out.append((*key, starts.pop(key), line.mono))
    return out


def max_overlap(spans: list[tuple[float, float]]) -> int:
    """The most spans open at one moment (an end at t comes before a start at t)."""
    edges = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    most = current = 0
    for _, delta in edges:
        current += delta
        most = max(most, current)
    return most


@dataclass(eq=False)
class WorkerProcess:
    proc: subprocess.Popen[bytes]
    name: str
    out: Path
    err: Path

    def stdout(self) -> str:
        return self.out.read_text(errors="replace")

    def stderr(self) -> str:
        return self.err.read_text(errors="replace")


@dataclass(eq=False)
class Fleet:
    """``agentflow worker`` processes on one database, their output in files; every process
    started is killed at the end of the test whatever happens."""

    tmp_path: Path
    db_url: str
    log: Path
    procs: list[WorkerProcess] = field(default_factory=list)

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("AGENTFLOW_DB", None)
        env[app.LOG_ENV] = str(self.log)
        return env

    def spawn(self, target: str, *options: str) -> WorkerProcess:
        name = f"worker{len(self.procs)}"
        out, err = self.tmp_path / f"{name}.out", self.tmp_path / f"{name}.err"
        with out.open("wb") as stdout, err.open("wb") as stderr:
            proc = subprocess.Popen(
                [*COMMAND, "--db", self.db_url, "worker", f"tests.engine._worker_app:{target}",
                 *options],
                cwd=ROOT, env=self.env(), stdout=stdout, stderr=stderr,
            )
        worker = WorkerProcess(proc, name, out, err)
        self.procs.append(worker)
        return worker

    def spawn_python(self, name: str, *args: str) -> WorkerProcess:
        out, err = self.tmp_path / f"{name}.out", self.tmp_path / f"{name}.err"
        with out.open("wb") as stdout, err.open("wb") as stderr:
            proc = subprocess.Popen(
                [sys.executable, *args], cwd=ROOT, env=self.env(), stdout=stdout, stderr=stderr,
            )
        worker = WorkerProcess(proc, name, out, err)
        self.procs.append(worker)
        return worker

    async def ready(self, *workers: WorkerProcess, timeout: float = 15.0) -> None:
        for w in workers:

            def started(w: WorkerProcess = w) -> bool:
                return "agentflow worker running" in w.stdout() or w.proc.poll() is not None

            await until(started, timeout, f"{w.name} to start")
            assert w.proc.poll() is None, f"{w.name} exited: {w.stderr()}"

    def report(self) -> str:
        return "\n".join(
            f"--- {w.name} (pid {w.proc.pid}, exit {w.proc.poll()})\n{w.stderr()[-3000:]}"
            for w in self.procs if w.err.exists() and w.err.stat().st_size
        )

    async def stop(self, *workers: WorkerProcess, timeout: float = 15.0) -> None:
        """SIGTERM once running (a process still starting up has no handler yet), then
        expect a clean exit (status 0)."""
        for w in workers:
            if w.proc.poll() is None:
                w.proc.send_signal(signal.SIGCONT)
        await self.ready(*workers)
        for w in workers:
            w.proc.terminate()
        for w in workers:
            code = w.proc.wait(timeout=timeout)
            assert code == 0, f"{w.name} exited with {code}\n{self.report()}"

    def kill_all(self) -> None:
        for w in self.procs:
            if w.proc.poll() is None:
                w.proc.kill()
                w.proc.wait(timeout=10)

    def assert_clean_stderr(self, *workers: WorkerProcess) -> None:
        for w in workers or tuple(self.procs):
            text = w.stderr()
            for bad in BAD_OUTPUT:
                assert bad not in text, f"{bad!r} in the stderr of {w.name}:\n{text[-3000:]}"


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    return tmp_path / "bodies.log"


@pytest.fixture
def fleet(tmp_path: Path, db_url: str, log_path: Path) -> Iterator[Fleet]:
    fleet = Fleet(tmp_path, db_url, log_path)
    try:
        yield fleet
    finally:
        fleet.kill_all()


# -- 1. three workers under load from two producer processes ----------------------------------
LOCAL_COUNT = 300
REMOTE_COUNT = 200


@pytest.mark.timeout(90)
async def test_three_worker_processes_run_every_instance_once_under_concurrent_producers(
    fleet: Fleet, db_path: Path, db_url: str, log_path: Path,
) -> None:
    workers = [fleet.spawn("load_app", "--poll-interval", "0.05") for _ in range(3)]
    await fleet.ready(*workers)
    producer = fleet.spawn_python(
        "producer", "-m", "tests.engine._worker_app", "produce", str(db_path), "p",
        str(REMOTE_COUNT), "0.1",  # ten groups 0.1 s apart: it is still producing below
    )
    # produce here while the other producer is at it
    await until(
        lambda: scalar(db_path, "SELECT count(*) FROM instances") > 0
        or producer.proc.poll() is not None,
        15, "the producer process to create instances",
    )
    # The other producer is still at it as this one starts (on a slower backend it may end
    # before this one does).
    overlapped = producer.proc.poll() is None
    async with af.Engine.open(db_url, worker=False) as engine:
        await asyncio.wait_for(app.produce(engine, "t", LOCAL_COUNT, pace=0.02), 45)
    assert overlapped, "the producers did not overlap"
    await until(lambda: producer.proc.poll() is not None, 30, "the producer process to finish")
    assert producer.proc.returncode == 0, fleet.report()

    expected = {
        id: app.load_output(id, n, wait)
        for prefix, count in (("t", LOCAL_COUNT), ("p", REMOTE_COUNT))
        for id, n, wait in app.load_ids(prefix, count)
    }
    total = len(expected)

    def finished() -> int:
        return scalar(
            db_path, "SELECT count(*) FROM instances WHERE status IN "
            "('complete', 'errored', 'terminated')",
        )

    await until(
        lambda: finished() == total, 45,
        lambda: f"every instance to finish: {status_counts(db_path, app.LOAD)}\n{fleet.report()}",
    )
    await fleet.stop(*workers)
    fleet.assert_clean_stderr()

    instances = rows(
        db_path, "SELECT id, status, output, error_name, error_message, owner, runs, params "
        "FROM instances",
    )
    assert len(instances) == total
    for id, status, output, error_name, error_message, owner, runs, params in instances:
        assert (status, error_name, error_message, owner) == ("complete", None, None, None), id
        assert json.loads(str(output)) == expected[str(id)]
        waits = json.loads(str(params))["wait"]
        # a run that is never interrupted runs once; an event wait may hibernate once
        assert runs == 1 or (waits and runs == 2), (id, runs)

    records = journal(db_path)
    per_step = Counter((id, name, count) for id, name, count, *_ in records)
    assert set(per_step.values()) == {1}
    expected_steps = {
        (id, name, 1)
        for id, out in expected.items()
        for name in [*(f"s{i}" for i in range(app.LOAD_STEPS)),
                     *(("go", "after") if out["got"] else ())]
    }
    assert set(per_step) == expected_steps
    assert {(state, attempts) for _, name, _, state, _, attempts in records
            if name != "go"} == {("completed", 1)}
    failed = scalar(db_path, "SELECT count(*) FROM history WHERE type = 'attempt.failed'")
    assert failed == 0

    # every body ran exactly once, and never two bodies of one instance at once
    log = app.read_log(log_path)
    assert body_runs(log) == Counter({(id, name): 1 for id, name, _ in expected_steps
                                      if name != "go"})
    by_instance: dict[str, list[tuple[float, float]]] = defaultdict(list)
    pids_before_wait: dict[str, set[int]] = defaultdict(set)
    for id, name, pid, start, end in intervals(log):
        by_instance[id].append((start, end))
        if name != "after":
            pids_before_wait[id].add(pid)
    assert len(by_instance) == total
    for id, spans in by_instance.items():
        assert max_overlap(spans) == 1, f"{id} ran two bodies at once"
    # one run never hops between workers, and the load was shared
    assert {len(p) for p in pids_before_wait.values()} == {1}
    worker_pids = {w.proc.pid for w in workers}
    ran_in = {line.pid for line in log}
    assert ran_in <= worker_pids
    assert len(ran_in) >= 2, "one worker did all the work"


# -- 2. slot limits across processes ---------------------------------------------------------
SLOT_INSTANCES = 10
SLOT_LIMIT = 2


@pytest.mark.timeout(60)
async def test_a_concurrency_limit_holds_across_worker_processes(
    fleet: Fleet, db_path: Path, db_url: str, log_path: Path,
) -> None:
    workers = [
        fleet.spawn("SLOTS_APP", "--concurrency", str(SLOT_LIMIT), "--poll-interval", "0.05")
        for _ in range(2)
    ]
    await fleet.ready(*workers)
    ids = [f"q{n:02d}" for n in range(SLOT_INSTANCES)]
    async with af.Engine.open(db_url, worker=False) as engine:
        # different step and sleep lengths, so that slots free up at different moments and
        # both processes race for them; naps long enough that slots are often free when a
        # sleeper falls due (a process refills a slot its own run freed at once, so the
        # other one mostly gets work by winning such a race)
        created = await engine.binding(app.SLOTS).create_batch([
            {"id": id, "params": {"work": 0.03 + 0.015 * (n % 4), "nap": 0.2 + 0.06 * (n % 5)}}
            for n, id in enumerate(ids)
        ])
        assert [i.id for i in created] == ids
        first = status_counts(db_path, app.SLOTS)
    # over the limit, instances wait their turn: nothing is rejected or errored
    assert set(first) <= {"queued", "running"}, first
    assert first.get("running", 0) <= SLOT_LIMIT
    assert first["queued"] >= SLOT_INSTANCES - SLOT_LIMIT

    most_running = 0
    statuses_seen: set[str] = set()

    def sample() -> bool:
        nonlocal most_running
        counts = status_counts(db_path, app.SLOTS)
        statuses_seen.update(counts)
        most_running = max(
            most_running, counts.get("running", 0) + counts.get("waiting_for_pause", 0)
        )
        return counts.get("complete", 0) == SLOT_INSTANCES

    await until(sample, 30, lambda: f"all to complete\n{fleet.report()}", interval=0.003)
    await fleet.stop(*workers)
    fleet.assert_clean_stderr()

    assert most_running <= SLOT_LIMIT
    assert statuses_seen <= {"queued", "running", "waiting", "complete"}, statuses_seen
    outputs = rows(db_path, "SELECT id, output FROM instances ORDER BY id")
    assert [(str(id), json.loads(str(out))) for id, out in outputs] == [(id, id) for id in ids]

    spans = intervals(app.read_log(log_path))
    assert len(spans) == app.SLOT_ROUNDS * SLOT_INSTANCES
    assert max_overlap([(start, end) for *_, start, end in spans]) == SLOT_LIMIT
    # Both processes did work under the one limit. (Whether they ever held a slot at the same
    # moment depends on scheduling, which a loaded machine can skew: not asserted.)
    assert len({span[2] for span in spans}) == 2, spans


# -- 3. a wake-up from another process -------------------------------------------------------
@pytest.mark.timeout(60)
async def test_an_event_from_another_process_wakes_a_worker_within_about_its_poll_interval(
    fleet: Fleet, db_path: Path, db_url: str, log_path: Path,
) -> None:
    worker = fleet.spawn("wake_app", "--poll-interval", "0.1")
    await fleet.ready(worker)
    async with af.Engine.open(db_url, worker=False) as engine:
        binding = engine.binding(app.WAKE)
        instances = [await binding.create(id=f"w{k}") for k in range(5)]
        await until(
            lambda: status_counts(db_path, app.WAKE) == {"waiting": 5}, 10,
            lambda: f"all to wait: {status_counts(db_path, app.WAKE)}\n{fleet.report()}",
        )
        latencies = []
        for k, instance in enumerate(instances):
            sent = time.time()
            await instance.send_event("go", {"k": k})

            def resumed(id: str = instance.id) -> bool:
                return any(line.instance == id for line in app.read_log(log_path))

            await until(resumed, 10, f"{instance.id} to resume")
            (line,) = [line for line in app.read_log(log_path)
                       if line.instance == instance.id and line.kind == "start"]
            latencies.append(line.wall - sent)
            details = await instance.wait(timeout=10)
            assert (details.status, details.output) == ("complete", {"k": k})
    await fleet.stop(worker)
    fleet.assert_clean_stderr()
    # the poll runs every 0.1 s; a second is a generous bound for poll + claim + replay
    assert max(latencies) < 1.0, latencies


# -- 4. lease expiry: a stopped worker is taken over, and its stale run writes nothing --------
HOLD = 0.8  # seconds the slow step takes
LEASE_SECONDS = 1.0


@dataclass(frozen=True)
class Takeover:
    stale: int  # pid of the worker that was stopped mid-step, then continued
    fresh: int  # pid of the worker that took the instance over
    lease_until: float  # the stopped run's lease, as it was while stopped
    log: list[app.LogLine]


async def stop_mid_step_and_take_over(
    fleet: Fleet, db_path: Path, db_url: str, log_path: Path,
) -> Takeover:
    """Worker A runs instance 'l1' into its slow step and is SIGSTOPped; worker B (short
    leases) takes it over; A is SIGCONTed while B runs the slow step, so that A's stale body
    ends first. Returns once the instance is complete and A had time to write what it would."""
    options = ("--lease-seconds", str(LEASE_SECONDS), "--poll-interval", "0.05")
    first = fleet.spawn("lease_app", *options)
    await fleet.ready(first)
    async with af.Engine.open(db_url, worker=False) as engine:
        await engine.binding(app.LEASE).create(id="l1", params={"hold": HOLD})

    def logged(kind: str, step: str, pid: int) -> bool:
        return any(
            (line.kind, line.step, line.pid) == (kind, step, pid)
            for line in app.read_log(log_path)
        )

    await until(lambda: logged("start", "slow", first.proc.pid), 10, "the slow step to start")
    first.proc.send_signal(signal.SIGSTOP)
    stopped_at = time.time()
    await asyncio.sleep(0.05)  # the signal has certainly landed: the lease is frozen
    ((lease_until,),) = rows(db_path, "SELECT lease_until FROM instances")
    assert isinstance(lease_until, float) and lease_until > stopped_at, "no live lease"

    second = fleet.spawn("lease_app", *options)
    await until(
        lambda: logged("start", "slow", second.proc.pid), 10,
        lambda: f"a takeover\n{fleet.report()}",
    )
    first.proc.send_signal(signal.SIGCONT)

    def status() -> str:
        return str(rows(db_path, "SELECT status FROM instances")[0][0])

    await until(lambda: status() == "complete", 10, lambda: f"completion\n{fleet.report()}")
    await until(lambda: logged("end", "slow", first.proc.pid), 5, "the stale body to end")
    await asyncio.sleep(0.5)  # time for the stale run to try whatever it would
    assert first.proc.poll() is None, f"the stale worker died\n{fleet.report()}"
    await fleet.stop(first, second)
    fleet.assert_clean_stderr()
    return Takeover(first.proc.pid, second.proc.pid, lease_until, app.read_log(log_path))


@pytest.mark.timeout(60)
async def test_a_stopped_workers_instance_is_taken_over_after_its_lease_and_it_journals_nothing(
    fleet: Fleet, db_path: Path, db_url: str, log_path: Path,
) -> None:
    t = await stop_mid_step_and_take_over(fleet, db_path, db_url, log_path)
    a, b = t.stale, t.fresh
    takeover = next(line for line in t.log if line.pid == b)
    assert takeover.wall >= t.lease_until, "taken over before the lease expired"
    assert [(line.kind, line.step, line.pid) for line in t.log] == [
        ("start", "before", a), ("end", "before", a),
        ("start", "slow", a),
        ("start", "slow", b),  # taken over while the first worker is stopped
        ("end", "slow", a),  # the stale body ends (after SIGCONT) ...
        ("end", "slow", b),
        ("start", "after", b), ("end", "after", b),  # ... and its run goes no further
    ]
    ((status, output, runs, owner),) = rows(
        db_path, "SELECT status, output, runs, owner FROM instances"
    )
    assert (status, runs, owner) == ("complete", 2, None)
    assert json.loads(str(output)) == {"before": a, "slow": b, "after": b}
    assert journal(db_path) == [
        ("l1", "before", 1, "completed", str(a), 1),
        ("l1", "slow", 1, "completed", str(b), 1),
        ("l1", "after", 1, "completed", str(b), 1),
    ]


@pytest.mark.timeout(60)
async def test_a_stale_run_writes_no_history_into_the_instance_after_a_takeover(
    fleet: Fleet, db_path: Path, db_url: str, log_path: Path,
) -> None:
    await stop_mid_step_and_take_over(fleet, db_path, db_url, log_path)
    async with af.Engine.open(db_url, worker=False) as engine:
        instance = await engine.get("l1")
        history = [(e.type, e.step, e.data) async for e in instance.events(follow=False)]
    runs = [h for h in history if h[0] == "instance.started"]
    assert [data.get("run") for _, _, data in runs] == [1, 2]
    second_run = history.index(runs[1])
    # What follows the takeover is the new run's story only: the stale run's 'slow' step
    # (started before the stop, its result refused) must not show up in it.
    assert [(type, step) for type, step, _ in history[second_run:]] == [
        ("instance.started", None),
        ("step.started", "slow"), ("attempt.started", "slow"), ("step.completed", "slow"),
        ("step.started", "after"), ("attempt.started", "after"), ("step.completed", "after"),
        ("instance.completed", None),
    ], history


# -- 5. a larger crash test: two workers SIGKILLed again and again -----------------------------
CRASH_INSTANCES = 300


@pytest.mark.timeout(90)
async def test_workers_sigkilled_repeatedly_under_load_lose_no_step_and_journal_none_twice(
    fleet: Fleet, db_path: Path, db_url: str, log_path: Path,
) -> None:
    seed = int.from_bytes(os.urandom(4), "big")
    rng = random.Random(seed)
    ids = [f"k{n:03d}" for n in range(CRASH_INSTANCES)]
    total_steps = CRASH_INSTANCES * app.CRASH_STEPS
    options = ("--lease-seconds", "1", "--poll-interval", "0.05")
    async with af.Engine.open(db_url, worker=False) as engine:
        await engine.binding(app.CRASH).create_batch(
            [{"id": id, "params": {"n": n}} for n, id in enumerate(ids)]
        )
    started = time.monotonic()

    def complete() -> int:
        return scalar(db_path, "SELECT count(*) FROM instances WHERE status = 'complete'")

    def progress() -> int:
        return sum(1 for line in app.read_log(log_path) if line.kind == "start")

    def context() -> str:
        return (f"seed {seed}; complete {complete()}/{CRASH_INSTANCES}; "
                f"{progress()} bodies started\n{fleet.report()}")

    slots = [fleet.spawn("crash_app", *options), fleet.spawn("crash_app", *options)]
    rounds = rng.randint(8, 11)
    kills = interrupted = 0
    for k in range(rounds):
        # spread the kills over the run, at random moments
        target = int(total_steps * (k + 1) / (rounds + 2)) + rng.randint(-40, 40)

        def reached(target: int = target) -> bool:
            return progress() >= target or complete() == CRASH_INSTANCES

        await until(reached, 30, lambda: f"progress ({context()})")
        await asyncio.sleep(rng.uniform(0, 0.05))
        # usually one worker, sometimes both at once
        victims = [0, 1] if rng.random() < 0.25 else [rng.randrange(2)]
        for v in victims:
            slots[v].proc.send_signal(signal.SIGKILL)
        for v in victims:
            assert slots[v].proc.wait(timeout=10) == -signal.SIGKILL
            slots[v] = fleet.spawn("crash_app", *options)
        kills += len(victims)
        if complete() < CRASH_INSTANCES:
            interrupted += 1
    await until(
        lambda: complete() == CRASH_INSTANCES, 40,
        lambda: f"every instance to complete ({context()})",
    )
    elapsed = time.monotonic() - started
    await fleet.stop(*slots)
    fleet.assert_clean_stderr()
    assert interrupted >= rounds - 1, f"the kills came after the work was done; {context()}"

    instances = rows(db_path, "SELECT id, status, output, owner, runs FROM instances ORDER BY id")
    assert [r[0] for r in instances] == ids
    for (id, status, output, owner, _), n in zip(instances, range(CRASH_INSTANCES), strict=True):
        assert (status, owner) == ("complete", None), id
        assert json.loads(str(output)) == {
            "instance": id,
            "results": [app.crash_value(n, i) for i in range(app.CRASH_STEPS)],
        }
    assert max(int(str(r[4])) for r in instances) >= 2, "no instance was ever taken over"

    names = [f"s{i}" for i in range(app.CRASH_STEPS)]
    records = journal(db_path)
    assert Counter((id, name) for id, name, *_ in records) == Counter(
        {(id, name): 1 for id in ids for name in names}
    ), "a step is missing from the journal or journaled twice"
    assert {(count, state) for _, _, count, state, _, _ in records} == {(1, "completed")}

    ran = body_runs(app.read_log(log_path))
    assert set(ran) == {(id, name) for id in ids for name in names}
    reruns = sum(n - 1 for n in ran.values())
    # a kill can cut short at most the steps in flight in the killed worker: one per running
    # instance, and a worker runs at most the workflow's limit at once
    assert reruns <= kills * app.CRASH_CONCURRENCY, (
        f"{reruns} step bodies re-ran after {kills} kills; {context()}"
    )
    print(f"crash test: seed {seed}, {kills} kills, {reruns} reruns, {elapsed:.1f} s")
