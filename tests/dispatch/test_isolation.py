"""Isolation is enforced by the binding, not hinted by metadata: a tenant can reach only its
own instances, and another tenant's id behaves exactly like an unknown one."""

from __future__ import annotations

from pathlib import Path

import pytest

import agentflow as af
from agentflow.dispatch import TenantBinding, TenantInstance
from tests.conftest import rows
from tests.dispatch._support import Dynamic, plan, settle, stored


async def two_tenants(dynamic: Dynamic) -> tuple[TenantBinding, TenantBinding]:
    await dynamic.registry.register("acme", "plans", plan("acme", wait=True))
    await dynamic.registry.register("globex", "plans", plan("globex", wait=True))
    return dynamic.tenant("acme"), dynamic.tenant("globex")


async def not_found_message(binding: TenantBinding, id: str) -> str:
    with pytest.raises(af.InstanceNotFoundError) as caught:
        await binding.get(id)
    return str(caught.value)


async def test_another_tenants_instance_behaves_as_unknown(dynamic: Dynamic) -> None:
    acme, globex = await two_tenants(dynamic)
    secret = await acme.create("secret", params={"card": "4242"})
    await settle(secret, "waiting")

    message = await not_found_message(globex, "secret")
    unknown = await not_found_message(globex, "never-created")
    assert message == unknown.replace("never-created", "secret")  # nothing tells them apart
    assert "4242" not in message
    # The stored id is not a way in either: it fails as a made-up one does.
    failures = []
    for stored_id in ("acme.secret", "nobody.secret"):
        with pytest.raises((af.InstanceNotFoundError, af.InvalidIdError)) as caught:
            await globex.get(stored_id)
        failures.append((type(caught.value), str(caught.value).replace(stored_id, "ID")))
    assert failures[0] == failures[1]

    # Creating the same local id gives globex its own instance; acme's is untouched.
    mine = await globex.create("secret", params={"mine": True})
    await settle(mine, "waiting")
    assert (await mine.status()).params == {"mine": True}
    assert (await acme.get("secret")).id == "secret"
    assert (await (await acme.get("secret")).status()).params == {"card": "4242"}


async def test_tenant_b_cannot_signal_pause_resume_terminate_or_restart_a_through_its_binding(
    dynamic: Dynamic, db_path: Path
) -> None:
    acme, globex = await two_tenants(dynamic)
    theirs = await acme.create("shared")
    mine = await globex.create("shared")
    await settle(theirs, "waiting")
    await settle(mine, "waiting")

    # Every operation globex can reach through its binding lands on its own instance.
    handle = await globex.get("shared")
    await handle.pause()
    assert (await handle.status()).status == "paused"
    assert (await theirs.status()).status == "waiting"
    await handle.resume()
    await handle.send_event("note", {"by": "globex"})  # a type nobody waits for
    await handle.restart()
    await settle(handle, "waiting")
    await handle.terminate()
    assert (await handle.status()).status == "terminated"
    assert (await theirs.status()).status == "waiting"
    mine_events = {e.type for e in await events_of(mine)}
    assert {"instance.paused", "instance.resumed", "event.received", "instance.restarted",
            "instance.terminated"} <= mine_events
    theirs_events = {e.type for e in await events_of(theirs)}
    assert not {"instance.paused", "instance.resumed", "event.received", "instance.restarted",
                "instance.terminated"} & theirs_events
    assert rows(db_path, "SELECT count(*) FROM inbox i JOIN instances n ON i.iid = n.iid "
                "WHERE n.id = 'acme.shared'") == [(0,)]

    # acme's own instance still works for acme.
    await theirs.send_event("go")
    assert (await settle(theirs)).output["tag"] == "acme"


async def events_of(instance: TenantInstance) -> list[af.InstanceEvent]:
    return [e async for e in instance.events(follow=False)]


async def test_metadata_claiming_another_tenant_grants_nothing(
    dynamic: Dynamic, db_path: Path
) -> None:
    acme, _ = await two_tenants(dynamic)
    acme_ref = await acme.registry.latest("acme", "plans")
    secret = await acme.create("secret")
    await settle(secret, "waiting")

    impostor = dynamic.tenant("globex", tenant="acme", tenant_ids=["acme"], owner="acme",
                              code=acme_ref.as_dict(), plan="plans")
    with pytest.raises(af.InstanceNotFoundError):
        await impostor.get("secret")
    instance = await impostor.create("probe")
    await settle(instance, "waiting")
    await instance.send_event("go")
    details = await settle(instance)
    assert details.output["tag"] == "globex"
    assert details.output["seen"] == "globex:globex"
    tenant, _ = stored(db_path, "globex.probe")
    assert tenant == "globex"
    assert (await instance.code()).tenant_id == "globex"
    assert dynamic.log.tenants_called() == {"acme", "globex"}
    assert [c for c in dynamic.log.calls if c[0] == "acme"] == [("acme", "lookup", "acme")]
