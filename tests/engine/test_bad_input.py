"""Bad input is refused with the exact typed error, a message naming what is wrong, and no
change to what is stored."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import agentflow as af
from tests.conftest import drive, rows, wait_for

MIB = 1024 * 1024
TABLES = ("instances", "steps", "inbox", "history")


# -- helpers ------------------------------------------------------------------------------------
def count(db_path: Path, table: str, where: str = "", *args: object) -> int:
    sql = f"SELECT count(*) FROM {table}" + (f" WHERE {where}" if where else "")
    value = rows(db_path, sql, *args)[0][0]
    assert isinstance(value, int)
    return value


def snapshot(db_path: Path) -> dict[str, list[tuple[object, ...]]]:
    """Every row of the tables a bad call must not touch."""
    return {table: rows(db_path, f"SELECT * FROM {table} ORDER BY 1") for table in TABLES}


def check_error(
    error: BaseException, cls: type[af.AgentflowError], *fragments: str,
) -> None:
    """``error`` is exactly ``cls``, an AgentflowError, and its message has every fragment."""
    assert type(error) is cls, f"expected {cls.__name__}, got {type(error).__name__}: {error}"
    assert isinstance(error, af.AgentflowError)
    message = str(error)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


async def errored_with(
    engine: af.Engine, clock: af.FakeClock, instance: af.Instance, name: str, *fragments: str,
) -> af.InstanceDetails:
    details = await drive(engine, clock, instance, timeout=5.0)
    assert details.status == "errored", details
    assert details.error is not None
    assert details.error.name == name, details.error
    for fragment in fragments:
        assert fragment in details.error.message, (fragment, details.error.message)
    return details


def step_rows(db_path: Path, instance: af.Instance) -> list[tuple[object, ...]]:
    return rows(
        db_path,
        "SELECT s.name, s.state, s.error_name, s.attempts FROM steps s "
        "JOIN instances i ON i.iid = s.iid WHERE i.id = ? ORDER BY s.seq",
        instance.id,
    )


async def noop_run(event: af.Event, step: af.Step) -> object:
    return await step.do("only", lambda: "done")


async def wait_for_go(event: af.Event, step: af.Step) -> object:
    got = await step.wait_for_event("approval", type="go", timeout="1 hour")
    return got.payload


# -- instance ids -------------------------------------------------------------------------------
BAD_IDS = [
    pytest.param(42, "must be a string, got int", id="int"),
    pytest.param(b"order-1", "must be a string, got bytes", id="bytes"),
    pytest.param("", "invalid instance id ''", id="empty"),
    pytest.param("i" * 101, "1-100 characters", id="101-chars"),
    pytest.param("a b", "invalid instance id 'a b'", id="space"),
    pytest.param("-x", "not starting with '-'", id="leading-dash"),
    pytest.param("é", "invalid instance id 'é'", id="non-ascii"),
    pytest.param("a/b", "invalid instance id 'a/b'", id="slash"),
    pytest.param("a\n", "invalid instance id 'a\\n'", id="trailing-newline"),
]


@pytest.mark.parametrize(("bad_id", "fragment"), BAD_IDS)
async def test_bad_instance_ids_are_refused_everywhere(
    engine: af.Engine, db_path: Path, bad_id: Any, fragment: str,
) -> None:
    binding = engine.register("ids", noop_run)
    before = snapshot(db_path)

    with pytest.raises(af.InvalidIdError) as create:
        await binding.create(id=bad_id, params={"x": 1})
    check_error(create.value, af.InvalidIdError, fragment)
    assert isinstance(create.value, af.InvalidArgumentError)
    assert isinstance(create.value, ValueError)

    with pytest.raises(af.InvalidIdError) as batch:
        await binding.create_batch([{"id": "fine-1"}, {"id": bad_id}])
    check_error(batch.value, af.InvalidIdError, fragment)

    with pytest.raises(af.InvalidIdError) as get:
        await binding.get(bad_id)
    check_error(get.value, af.InvalidIdError, fragment)

    with pytest.raises(af.InvalidIdError) as engine_get:
        await engine.get(bad_id)
    check_error(engine_get.value, af.InvalidIdError, fragment)

    # Nothing was created, not even the valid first item of the batch.
    assert snapshot(db_path) == before
    assert count(db_path, "instances") == 0


# -- duplicate ids and create_batch -------------------------------------------------------------
async def test_create_with_a_used_id_raises_and_leaves_the_original_untouched(
    engine: af.Engine, clock: af.FakeClock, db_path: Path,
) -> None:
    calls: list[object] = []

    async def run(event: af.Event, step: af.Step) -> object:
        def echo() -> object:
            calls.append(event.payload)
            return event.payload

        return await step.do("echo", echo)

    binding = engine.register("dupes", run)
    original = await binding.create(id="order-1", params={"v": 1})
    assert (await drive(engine, clock, original)).output == {"v": 1}
    before = snapshot(db_path)

    with pytest.raises(af.DuplicateInstanceError) as info:
        await binding.create(id="order-1", params={"v": 2})
    check_error(info.value, af.DuplicateInstanceError, "'order-1'", "already exists", "'dupes'")
    assert isinstance(info.value, ValueError)

    assert snapshot(db_path) == before
    details = await original.status()
    assert details.status == "complete"
    assert details.params == {"v": 1}
    assert details.output == {"v": 1}
    assert calls == [{"v": 1}]  # the original did not run again


async def test_create_batch_skips_existing_ids_and_repeats_inside_the_batch(
    engine: af.Engine, clock: af.FakeClock, db_path: Path,
) -> None:
    calls: list[object] = []

    async def run(event: af.Event, step: af.Step) -> object:
        def echo() -> object:
            calls.append(event.payload)
            return event.payload

        return await step.do("echo", echo)

    binding = engine.register("batch", run)
    existing = await binding.create(id="a", params={"v": "a1"})
    await drive(engine, clock, existing)
    history_of_a = rows(
        db_path,
        "SELECT h.* FROM history h JOIN instances i ON i.iid = h.iid WHERE i.id = 'a'",
    )

    items: list[dict[str, Any]] = [
        {"id": "a", "params": {"v": "a2"}},
        {"id": "b", "params": {"v": "b1"}},
        {"id": "b", "params": {"v": "b2"}},
        {"id": "c"},
    ]
    instances = await binding.create_batch(items)
    assert [i.id for i in instances] == ["a", "b", "b", "c"]
    for instance in instances:
        assert (await drive(engine, clock, instance)).status == "complete"

    # A retried batch is idempotent.
    again = await binding.create_batch(items)
    assert [i.id for i in again] == ["a", "b", "b", "c"]

    assert rows(db_path, "SELECT id FROM instances ORDER BY id") == [("a",), ("b",), ("c",)]
    assert [(await i.status()).params for i in instances] == [
        {"v": "a1"}, {"v": "b1"}, {"v": "b1"}, None,
    ]
    assert (await existing.status()).output == {"v": "a1"}
    assert rows(
        db_path,
        "SELECT h.* FROM history h JOIN instances i ON i.iid = h.iid WHERE i.id = 'a'",
    ) == history_of_a
    assert sorted(calls, key=repr) == sorted([{"v": "a1"}, {"v": "b1"}, None], key=repr)


BAD_BATCH_ITEMS = [
    pytest.param(["order-1"], "create_batch item 0", id="str-item"),
    pytest.param([{"id": "ok-1"}, 7], "create_batch item 1", id="int-item"),
    pytest.param([{"id": "ok-1"}, None], "create_batch item 1", id="none-item"),
    pytest.param([{"id": "ok-1", "parms": {}}], "'params'", id="unknown-key"),
    pytest.param([{"id": "ok-1"}, {"id": "ok-2", "tenant": "t"}], "item 1", id="extra-key"),
    pytest.param({"id": "ok-1"}, "list of", id="a-dict-not-a-list"),
    pytest.param("ok-1", "list of", id="a-str-not-a-list"),
]


@pytest.mark.parametrize(("items", "fragment"), BAD_BATCH_ITEMS)
async def test_bad_create_batch_items_create_nothing(
    engine: af.Engine, db_path: Path, items: Any, fragment: str,
) -> None:
    binding = engine.register("batch", noop_run)
    before = snapshot(db_path)
    with pytest.raises(af.InvalidArgumentError) as info:
        await binding.create_batch(items)
    check_error(info.value, af.InvalidArgumentError, fragment)
    assert isinstance(info.value, ValueError)
    assert snapshot(db_path) == before


# -- params -------------------------------------------------------------------------------------
class Opaque:
    pass


BAD_PARAMS = [
    pytest.param({1, 2}, "JSON-serialisable", id="set"),
    pytest.param(Opaque(), "JSON-serialisable", id="object"),
    pytest.param({"nested": [Opaque()]}, "Opaque", id="nested-object"),
    pytest.param({"x": float("nan")}, "JSON-serialisable", id="nan"),
    pytest.param({"blob": "x" * MIB}, f"over the {MIB}-byte limit", id="over-1MiB"),
]


@pytest.mark.parametrize(("params", "fragment"), BAD_PARAMS)
async def test_bad_params_raise_payload_error_and_create_nothing(
    engine: af.Engine, db_path: Path, params: Any, fragment: str,
) -> None:
    binding = engine.register("params", noop_run)
    before = snapshot(db_path)

    with pytest.raises(af.PayloadError) as create:
        await binding.create(id="p-1", params=params)
    check_error(create.value, af.PayloadError, "params of instance 'p-1'", fragment)
    assert isinstance(create.value, ValueError)

    with pytest.raises(af.PayloadError) as batch:
        await binding.create_batch([{"id": "p-0"}, {"id": "p-1", "params": params}])
    check_error(batch.value, af.PayloadError, "params of instance 'p-1'", fragment)

    assert snapshot(db_path) == before


async def test_values_at_the_limits_are_accepted(
    engine: af.Engine, clock: af.FakeClock,
) -> None:
    """The limits are inclusive: the tests above fail for the right reason."""
    long_name = "n" * 256
    long_type = "t" * 100

    async def run(event: af.Event, step: af.Step) -> object:
        size = await step.do(long_name, lambda: len(event.payload))
        got = await step.wait_for_event("wait", type=long_type, timeout="1 hour")
        return {"size": size, "got": len(got.payload)}

    binding = engine.register("limits", run)
    blob = "x" * (MIB - 2)  # JSON adds two quotes: exactly 1 MiB
    instance = await binding.create(id="i" * 100, params=blob)
    await wait_for(instance, "waiting")
    await instance.send_event(long_type, "small")
    details = await drive(engine, clock, instance)
    assert details.status == "complete", details.error
    assert details.output == {"size": MIB - 2, "got": 5}


async def test_an_event_payload_send_event_accepts_can_be_received(
    engine: af.Engine, clock: af.FakeClock,
) -> None:
    """send_event accepts a payload of exactly 1 MiB; wait_for_event must be able to take it."""

    async def run(event: af.Event, step: af.Step) -> int:
        got = await step.wait_for_event("wait", type="big", timeout="1 hour")
        return len(got.payload)

    instance = await engine.register("big-events", run).create(id="big-1")
    await wait_for(instance, "waiting")
    await instance.send_event("big", "y" * (MIB - 2))  # exactly 1 MiB of JSON: accepted
    details = await drive(engine, clock, instance)
    assert details.status == "complete", details.error
    assert details.output == MIB - 2


# -- step names ---------------------------------------------------------------------------------
BAD_STEP_NAMES = [
    pytest.param(123, "must be a string, got int", id="int"),
    pytest.param(None, "must be a string, got NoneType", id="none"),
    pytest.param("", "1-256 characters, got 0", id="empty"),
    pytest.param("s" * 257, "got 257", id="257-chars"),
    pytest.param("fetch\nuser", "control character", id="newline"),
    pytest.param("fetch\x00", "control character", id="nul"),
]


@pytest.mark.parametrize("kind", ["do", "sleep", "wait_for_event"])
@pytest.mark.parametrize(("name", "fragment"), BAD_STEP_NAMES)
async def test_bad_step_names_error_the_instance(
    engine: af.Engine, clock: af.FakeClock, db_path: Path, kind: str, name: Any, fragment: str,
) -> None:
    bodies: list[str] = []

    async def run(event: af.Event, step: af.Step) -> str:
        await step.do("before", lambda: bodies.append("before"))
        if kind == "do":
            await step.do(name, lambda: bodies.append("bad"))
        elif kind == "sleep":
            await step.sleep(name, "1 second")
        else:
            await step.wait_for_event(name, type="go", timeout="1 minute")
        await step.do("after", lambda: bodies.append("after"))
        return "finished"

    binding = engine.register("names", run)
    instance = await binding.create(id="n-1")
    await errored_with(engine, clock, instance, "InvalidStepNameError", fragment)
    assert bodies == ["before"]
    assert step_rows(db_path, instance) == [("before", "completed", None, 1)]


# -- event types and payloads -------------------------------------------------------------------
BAD_EVENT_TYPES = [
    pytest.param("", "invalid event type ''", id="empty"),
    pytest.param("a b", "invalid event type 'a b'", id="space"),
    pytest.param(".go", "invalid event type '.go'", id="leading-dot"),
    pytest.param("é", "invalid event type 'é'", id="non-ascii"),
    pytest.param("t" * 101, "1-100 characters", id="101-chars"),
    pytest.param(42, "must be a string, got int", id="int"),
    pytest.param(None, "must be a string, got NoneType", id="none"),
]


@pytest.mark.parametrize(("event_type", "fragment"), BAD_EVENT_TYPES)
async def test_send_event_with_a_bad_type_stores_nothing(
    engine: af.Engine, clock: af.FakeClock, db_path: Path, event_type: Any, fragment: str,
) -> None:
    binding = engine.register("events", wait_for_go)
    instance = await binding.create(id="e-1")
    await wait_for(instance, "waiting")
    before = snapshot(db_path)

    with pytest.raises(af.InvalidEventTypeError) as info:
        await instance.send_event(event_type, {"ok": True})
    check_error(info.value, af.InvalidEventTypeError, fragment)
    assert isinstance(info.value, af.InvalidArgumentError)
    assert isinstance(info.value, ValueError)

    assert snapshot(db_path) == before
    assert count(db_path, "inbox") == 0
    assert (await instance.status()).status == "waiting"
    # The instance still takes a good event afterwards.
    await instance.send_event("go", {"ok": True})
    assert (await drive(engine, clock, instance)).output == {"ok": True}


BAD_PAYLOADS = [
    pytest.param({1, 2}, "JSON-serialisable", id="set"),
    pytest.param(Opaque(), "JSON-serialisable", id="object"),
    pytest.param({"x": float("inf")}, "JSON-serialisable", id="inf"),
    pytest.param("x" * MIB, f"over the {MIB}-byte limit", id="over-1MiB"),
]


@pytest.mark.parametrize(("payload", "fragment"), BAD_PAYLOADS)
async def test_send_event_with_a_bad_payload_stores_nothing(
    engine: af.Engine, clock: af.FakeClock, db_path: Path, payload: Any, fragment: str,
) -> None:
    binding = engine.register("events", wait_for_go)
    instance = await binding.create(id="e-1")
    await wait_for(instance, "waiting")
    before = snapshot(db_path)

    with pytest.raises(af.PayloadError) as info:
        await instance.send_event("go", payload)
    check_error(info.value, af.PayloadError, "payload of event 'go'", fragment)
    assert isinstance(info.value, ValueError)

    assert snapshot(db_path) == before
    assert (await instance.status()).status == "waiting"
    await instance.send_event("go", [1, 2])
    assert (await drive(engine, clock, instance)).output == [1, 2]


@pytest.mark.parametrize(
    ("event_type", "fragment"),
    [
        pytest.param("a b", "invalid event type 'a b'", id="space"),
        pytest.param("", "invalid event type ''", id="empty"),
        pytest.param(7, "must be a string, got int", id="int"),
    ],
)
async def test_wait_for_event_with_a_bad_type_errors_the_instance(
    engine: af.Engine, clock: af.FakeClock, db_path: Path, event_type: Any, fragment: str,
) -> None:
    async def run(event: af.Event, step: af.Step) -> object:
        return await step.wait_for_event("approval", type=event_type, timeout="1 minute")

    instance = await engine.register("waits", run).create(id="w-1")
    await errored_with(engine, clock, instance, "InvalidEventTypeError", fragment)
    assert step_rows(db_path, instance) == []


# -- durations ----------------------------------------------------------------------------------
BAD_DURATIONS: list[tuple[str, Any, str]] = [
    ("10-parsecs", "10 parsecs", "'10 parsecs'"),
    ("negative", -1, "non-negative"),
    ("nan", float("nan"), "finite"),
    ("bool", True, "not a bool"),
    ("none", None, "got NoneType"),
    ("words", "ten seconds", "'ten seconds'"),
    ("int-beyond-float", 10**400, "finite"),
    ("int-beyond-printing", 10**5000, "an integer of 16610 bits"),
]
DURATION_CASES = [
    pytest.param(kind, value, fragment, id=f"{kind}-{case}")
    for kind in ("sleep", "do-timeout", "wait-timeout")
    for case, value, fragment in BAD_DURATIONS
    if not (kind == "do-timeout" and value is None)  # timeout=None means the default
]
WHAT = {
    "sleep": "sleep 'nap' duration",
    "do-timeout": "step 'call' timeout",
    "wait-timeout": "wait 'approval' timeout",
}


@pytest.mark.parametrize(("kind", "value", "fragment"), DURATION_CASES)
async def test_bad_durations_error_the_instance(
    engine: af.Engine, clock: af.FakeClock, db_path: Path, kind: str, value: Any, fragment: str,
) -> None:
    bodies: list[str] = []

    async def run(event: af.Event, step: af.Step) -> str:
        if kind == "sleep":
            await step.sleep("nap", value)
        elif kind == "do-timeout":
            await step.do("call", lambda: bodies.append("call"), timeout=value)
        else:
            await step.wait_for_event("approval", type="go", timeout=value)
        return "finished"

    instance = await engine.register("durations", run).create(id="d-1")
    await errored_with(engine, clock, instance, "InvalidDurationError", WHAT[kind], fragment)
    assert bodies == []
    assert step_rows(db_path, instance) == []


# -- retries ------------------------------------------------------------------------------------
BAD_RETRIES = [
    pytest.param(af.Retries(limit=-1), "InvalidArgumentError", "retries.limit", id="limit--1"),
    pytest.param(
        af.Retries(backoff="sideways"),  # type: ignore[arg-type]
        "InvalidArgumentError", "'sideways'", id="backoff-sideways",
    ),
    pytest.param(3, "InvalidArgumentError", "retries must be af.Retries", id="int"),
    pytest.param(
        af.Retries(delay="soon"), "InvalidDurationError", "retries.delay", id="delay-soon",
    ),
]


@pytest.mark.parametrize(("retries", "error_name", "fragment"), BAD_RETRIES)
async def test_bad_retries_error_the_instance_before_the_body_runs(
    engine: af.Engine, clock: af.FakeClock, db_path: Path, retries: Any, error_name: str,
    fragment: str,
) -> None:
    bodies: list[str] = []

    async def run(event: af.Event, step: af.Step) -> str:
        await step.do("call", lambda: bodies.append("call"), retries=retries)
        return "finished"

    instance = await engine.register("retries", run).create(id="r-1")
    await errored_with(engine, clock, instance, error_name, "step 'call'", fragment)
    assert bodies == []
    assert step_rows(db_path, instance) == []


# -- step results and outputs -------------------------------------------------------------------
BAD_RESULTS = [
    pytest.param(lambda: {1, 2}, "JSON-serialisable", id="set"),
    pytest.param(Opaque, "JSON-serialisable", id="object"),
    pytest.param(lambda: float("nan"), "JSON-serialisable", id="nan"),
    pytest.param(lambda: "x" * MIB, f"over the {MIB}-byte limit", id="over-1MiB"),
]


@pytest.mark.parametrize(("make", "fragment"), BAD_RESULTS)
async def test_a_bad_step_result_fails_the_step_once_and_the_plan_can_catch_it(
    engine: af.Engine, clock: af.FakeClock, db_path: Path, make: Callable[[], object],
    fragment: str,
) -> None:
    calls: list[int] = []

    def body() -> object:
        calls.append(1)
        return make()

    async def run(event: af.Event, step: af.Step) -> dict[str, object]:
        try:
            await step.do("make", body)
        except af.PayloadError as exc:
            return {"caught": type(exc).__name__, "message": str(exc)}
        return {"caught": None}

    instance = await engine.register("results", run).create(id="s-1")
    details = await drive(engine, clock, instance)
    assert details.status == "complete", details.error
    assert details.output["caught"] == "PayloadError"
    assert "result of step 'make'" in details.output["message"]
    assert fragment in details.output["message"]
    assert len(calls) == 1  # not retried
    assert step_rows(db_path, instance) == [("make", "errored", "PayloadError", 1)]


@pytest.mark.parametrize(("make", "fragment"), BAD_RESULTS)
async def test_an_uncaught_bad_step_result_errors_the_instance(
    engine: af.Engine, clock: af.FakeClock, db_path: Path, make: Callable[[], object],
    fragment: str,
) -> None:
    calls: list[int] = []

    def body() -> object:
        calls.append(1)
        return make()

    async def run(event: af.Event, step: af.Step) -> object:
        return await step.do("make", body)

    instance = await engine.register("results", run).create(id="s-1")
    await errored_with(
        engine, clock, instance, "PayloadError", "result of step 'make'", fragment
    )
    assert len(calls) == 1
    assert step_rows(db_path, instance) == [("make", "errored", "PayloadError", 1)]


@pytest.mark.parametrize(("make", "fragment"), BAD_RESULTS)
async def test_a_bad_workflow_output_errors_the_instance(
    engine: af.Engine, clock: af.FakeClock, db_path: Path, make: Callable[[], object],
    fragment: str,
) -> None:
    async def run(event: af.Event, step: af.Step) -> object:
        await step.do("fine", lambda: 1)
        return make()

    instance = await engine.register("outputs", run).create(id="o-1")
    await errored_with(engine, clock, instance, "PayloadError", "workflow output", fragment)
    assert rows(db_path, "SELECT output FROM instances WHERE id = 'o-1'") == [(None,)]
    assert step_rows(db_path, instance) == [("fine", "completed", None, 1)]


# -- unknown ids and names ----------------------------------------------------------------------
async def test_unknown_ids_raise_instance_not_found(engine: af.Engine, db_path: Path) -> None:
    binding = engine.register("known", noop_run)
    other = engine.register("other", noop_run)
    await other.create(id="elsewhere")
    before = count(db_path, "instances")

    with pytest.raises(af.InstanceNotFoundError) as from_binding:
        await binding.get("nope")
    check_error(from_binding.value, af.InstanceNotFoundError, "'nope'", "'known'")
    assert isinstance(from_binding.value, af.NotFoundError)
    assert isinstance(from_binding.value, LookupError)

    with pytest.raises(af.InstanceNotFoundError) as from_engine:
        await engine.get("nope")
    check_error(from_engine.value, af.InstanceNotFoundError, "'nope'")
    assert isinstance(from_engine.value, LookupError)

    # An id of another workflow is not visible through this binding.
    with pytest.raises(af.InstanceNotFoundError):
        await binding.get("elsewhere")
    with pytest.raises(af.InstanceNotFoundError):
        await engine.get("elsewhere", workflow="known")

    with pytest.raises(af.WorkflowNotFoundError) as workflow:
        engine.workflow("nope")
    check_error(workflow.value, af.WorkflowNotFoundError, "'nope'")
    assert isinstance(workflow.value, LookupError)

    assert count(db_path, "instances") == before


# -- the step limit -----------------------------------------------------------------------------
@pytest.mark.parametrize("catch", [None, af.StepLimitExceededError, Exception])
async def test_the_step_limit_errors_the_instance_even_when_the_plan_catches_it(
    db_url: str, db_path: Path, clock: af.FakeClock, catch: type[BaseException] | None,
) -> None:
    bodies: list[int] = []

    async def run(event: af.Event, step: af.Step) -> str:
        try:
            for i in range(10):
                await step.do(f"step {i}", lambda i=i: bodies.append(i))
        except Exception as exc:
            if catch is None or not isinstance(exc, catch):
                raise
            return "swallowed"
        return "all ten ran"

    async with af.Engine.open(db_url, clock=clock, poll_interval=0.05, max_steps=5) as engine:
        instance = await engine.register("loop", run).create(id="loop-1")
        details = await errored_with(
            engine, clock, instance, "StepLimitExceededError", "'loop-1'", "more than 5 steps"
        )
    assert details.output is None
    assert bodies == [0, 1, 2, 3, 4]
    assert count(db_path, "steps") == 5


# -- lifecycle in the wrong state ---------------------------------------------------------------
@pytest.fixture
async def completed(engine: af.Engine, clock: af.FakeClock) -> af.Instance:
    async def run(event: af.Event, step: af.Step) -> str:
        await step.do("a", lambda: 1)
        await step.do("b", lambda: 2)
        return "done"

    instance = await engine.register("finished", run).create(id="c-1")
    assert (await drive(engine, clock, instance)).status == "complete"
    return instance


@pytest.mark.parametrize("action", ["terminate", "pause", "resume"])
async def test_controlling_a_completed_instance_raises_invalid_state(
    completed: af.Instance, db_path: Path, action: str,
) -> None:
    before = snapshot(db_path)
    with pytest.raises(af.InvalidStateError) as info:
        await getattr(completed, action)()
    check_error(info.value, af.InvalidStateError, action, "'c-1'", "complete")
    assert snapshot(db_path) == before
    details = await completed.status()
    assert (details.status, details.output) == ("complete", "done")


async def test_send_event_to_a_completed_instance_raises_invalid_state(
    completed: af.Instance, db_path: Path,
) -> None:
    before = snapshot(db_path)
    with pytest.raises(af.InvalidStateError) as info:
        await completed.send_event("go", {"late": True})
    check_error(info.value, af.InvalidStateError, "'c-1'", "complete")
    assert snapshot(db_path) == before
    assert count(db_path, "inbox") == 0


async def test_restart_from_an_unknown_step_raises_and_keeps_the_journal(
    completed: af.Instance, db_path: Path,
) -> None:
    before = snapshot(db_path)
    with pytest.raises(af.InvalidArgumentError) as info:
        await completed.restart(from_step="unknown")
    check_error(info.value, af.InvalidArgumentError, "'unknown'", "'c-1'", "a, b")
    assert isinstance(info.value, ValueError)

    with pytest.raises(af.InvalidStepNameError):
        await completed.restart(from_step="")

    assert snapshot(db_path) == before
    assert (await completed.status()).status == "complete"


# -- registration -------------------------------------------------------------------------------
def sync_run(event: af.Event, step: af.Step) -> str:
    return "not async"


class SyncWorkflow(af.Workflow):
    def run(self, event: af.Event, step: af.Step) -> str:  # type: ignore[override]
        return "not async"


class NoRun:
    pass


@pytest.mark.parametrize(
    ("code", "fragment"),
    [
        pytest.param(42, "got int", id="int"),
        pytest.param("run", "got str", id="str"),
        pytest.param(None, "got NoneType", id="none"),
        pytest.param(sync_run, "got function", id="sync-function"),
        pytest.param(lambda event, step: None, "got function", id="lambda"),
        pytest.param(SyncWorkflow, "SyncWorkflow needs 'async def run", id="sync-class"),
        pytest.param(NoRun, "NoRun needs 'async def run", id="class-without-run"),
    ],
)
async def test_register_refuses_code_that_is_not_an_async_workflow(
    engine: af.Engine, code: object, fragment: str,
) -> None:
    with pytest.raises(af.InvalidArgumentError) as info:
        engine.register("bad-code", code)
    check_error(info.value, af.InvalidArgumentError, fragment)
    assert isinstance(info.value, ValueError)
    with pytest.raises(af.WorkflowNotFoundError):
        engine.workflow("bad-code")
    engine.register("bad-code", noop_run)  # the name was not taken by the failed attempt


@pytest.mark.parametrize("concurrency", [0, -3, "10", True, 2.5])
async def test_register_refuses_a_bad_concurrency(
    engine: af.Engine, concurrency: Any,
) -> None:
    with pytest.raises(af.InvalidArgumentError) as info:
        engine.register("capped", noop_run, concurrency=concurrency)
    check_error(info.value, af.InvalidArgumentError, "concurrency", repr(concurrency))
    with pytest.raises(af.WorkflowNotFoundError):
        engine.workflow("capped")


# -- engine lifecycle ---------------------------------------------------------------------------
@dataclass
class Closed:
    engine: af.Engine
    binding: af.WorkflowBinding
    instance: af.Instance


async def _register(c: Closed) -> object:
    return c.engine.register("later", noop_run)


CLOSED_OPERATIONS: list[Any] = [
    pytest.param(_register, id="engine.register"),
    pytest.param(lambda c: c.engine.get("c-1"), id="engine.get"),
    pytest.param(lambda c: c.engine.list_instances(), id="engine.list_instances"),
    pytest.param(lambda c: c.binding.create(id="c-2"), id="binding.create"),
    pytest.param(lambda c: c.binding.create_batch([{"id": "c-2"}]), id="binding.create_batch"),
    pytest.param(lambda c: c.binding.get("c-1"), id="binding.get"),
    pytest.param(lambda c: c.instance.status(), id="instance.status"),
    pytest.param(lambda c: c.instance.send_event("go"), id="instance.send_event"),
    pytest.param(lambda c: c.instance.terminate(), id="instance.terminate"),
    pytest.param(lambda c: c.instance.restart(), id="instance.restart"),
]


@pytest.mark.parametrize("operation", CLOSED_OPERATIONS)
async def test_an_engine_used_after_close_raises_engine_closed(
    db_url: str, db_path: Path, clock: af.FakeClock,
    operation: Callable[[Closed], Awaitable[object]],
) -> None:
    engine = await af.Engine.open(db_url, clock=clock, poll_interval=0.05)
    binding = engine.register("closing", wait_for_go)
    instance = await binding.create(id="c-1")
    await wait_for(instance, "waiting")
    await engine.close()
    await engine.close()  # twice is fine
    before = snapshot(db_path)

    with pytest.raises(af.EngineClosedError) as info:
        await operation(Closed(engine, binding, instance))
    check_error(info.value, af.EngineClosedError, "closed")
    assert snapshot(db_path) == before


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        pytest.param("mysql://x", "'mysql://x'", id="mysql"),
        pytest.param("sqlite://", "names no file", id="sqlite-without-path"),
        pytest.param(42, "must be a string, got int", id="int"),
    ],
)
async def test_engine_open_refuses_an_unsupported_url(
    tmp_path: Path, url: Any, fragment: str,
) -> None:
    async def open_it() -> None:
        async with af.Engine.open(url):
            pass

    with pytest.raises(af.InvalidArgumentError) as info:
        await open_it()
    check_error(info.value, af.InvalidArgumentError, fragment)
    assert isinstance(info.value, ValueError)
    assert list(tmp_path.iterdir()) == []
