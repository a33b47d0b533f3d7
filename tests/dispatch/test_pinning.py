"""Version pinning: an instance runs the code it was created with, across sleeps and new
versions, until it is upgraded explicitly."""

from __future__ import annotations

from pathlib import Path

import pytest

import agentflow as af
from tests.dispatch._support import Dynamic, envelope_of, plan, settle, wake


async def test_an_instance_created_under_v1_wakes_and_finishes_on_v1(
    dynamic: Dynamic, clock: af.FakeClock, db_path: Path
) -> None:
    v1 = await dynamic.registry.register("acme", "plans", plan("v1", sleep=True))
    acme = dynamic.tenant("acme")
    old = await acme.create("old")
    await settle(old, "waiting")
    v2 = await dynamic.registry.register("acme", "plans", plan("v2", sleep=True))
    assert v2 != v1

    await clock.advance(3600)
    details = await settle(old)
    assert details.status == "complete", details.error
    assert details.output["tag"] == "v1"
    assert await old.code() == v1
    assert envelope_of(db_path, "acme.old")["code"] == v1.as_dict()

    new = await acme.create("new")
    assert await new.code() == v2
    await wake(clock, new)
    details = await settle(new)
    assert details.status == "complete", details.error
    assert details.output["tag"] == "v2"


async def test_an_instance_can_be_created_on_an_older_version_explicitly(
    dynamic: Dynamic,
) -> None:
    v1 = await dynamic.registry.register("acme", "plans", plan("v1"))
    await dynamic.registry.register("acme", "plans", plan("v2"))
    instance = await dynamic.tenant("acme").create("job", code=v1)
    assert await instance.code() == v1
    details = await settle(instance)
    assert details.output["tag"] == "v1"


async def test_upgrade_repins_explicitly_and_the_next_run_uses_the_new_code(
    dynamic: Dynamic, clock: af.FakeClock, db_path: Path
) -> None:
    v1 = await dynamic.registry.register("acme", "plans", plan("v1", sleep=True))
    acme = dynamic.tenant("acme")
    instance = await acme.create("job", params={"k": 1})
    await settle(instance, "waiting")
    v2 = await dynamic.registry.register("acme", "plans", plan("v2", sleep=True))
    assert await instance.code() == v1  # registering v2 changed nothing

    assert await instance.upgrade() == v2
    assert await instance.code() == v2
    envelope = envelope_of(db_path, "acme.job")
    assert envelope["code"] == v2.as_dict()
    assert (await instance.status()).params == {"k": 1}  # params kept

    await clock.advance(3600)
    details = await settle(instance)
    assert details.status == "complete", details.error
    assert details.output["tag"] == "v2"
    assert details.output["params"] == {"k": 1}
    # The step finished under v1 kept its journaled result: v2's 'look' did not run again.
    assert [c for c in dynamic.log.calls if c[1] == "lookup"] == [("acme", "lookup", "v1")]
    assert details.output["seen"] == "acme:v1"
    events = [e async for e in instance.events(follow=False)]
    upgraded = [e for e in events if e.type == "instance.upgraded"]
    assert len(upgraded) == 1 and upgraded[0].data["code"] == v2.as_dict()


async def test_upgrade_to_a_named_version_and_back(
    dynamic: Dynamic, clock: af.FakeClock
) -> None:
    v1 = await dynamic.registry.register("acme", "plans", plan("v1", sleep=True))
    v2 = await dynamic.registry.register("acme", "plans", plan("v2", sleep=True))
    instance = await dynamic.tenant("acme").create("job")
    assert await instance.code() == v2
    assert await instance.upgrade(v1) == v1
    await wake(clock, instance)
    details = await settle(instance)
    assert details.output["tag"] == "v1"


async def test_a_tenant_cannot_pin_or_upgrade_to_another_tenants_code(
    dynamic: Dynamic,
) -> None:
    theirs = await dynamic.registry.register("globex", "plans", plan("globex", wait=True))
    mine = await dynamic.registry.register("acme", "plans", plan("acme", wait=True))
    acme = dynamic.tenant("acme")
    with pytest.raises(af.InvalidArgumentError):
        await acme.create("stolen", code=theirs)
    with pytest.raises(af.InstanceNotFoundError):
        await acme.get("stolen")
    instance = await acme.create("job")
    await settle(instance, "waiting")
    with pytest.raises(af.InvalidArgumentError):
        await instance.upgrade(theirs)
    assert await instance.code() == mine
    await instance.send_event("go")
    assert (await settle(instance)).output["tag"] == "acme"


async def test_restart_replays_on_the_pinned_version(
    dynamic: Dynamic, clock: af.FakeClock
) -> None:
    v1 = await dynamic.registry.register("acme", "plans", plan("v1"))
    instance = await dynamic.tenant("acme").create("job")
    assert (await settle(instance)).output["tag"] == "v1"
    await dynamic.registry.register("acme", "plans", plan("v2"))
    await instance.restart()
    details = await settle(instance)
    assert details.status == "complete", details.error
    assert details.output["tag"] == "v1"
    assert await instance.code() == v1
