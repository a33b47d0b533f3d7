"""Batch creation for a tenant: one transaction, idempotent, existing ids returned as they
are (still pinned to the code they were created with), never another tenant's."""

from __future__ import annotations

from pathlib import Path

import pytest

import agentflow as af
from tests.conftest import rows
from tests.dispatch._support import Dynamic, envelope_of, plan, settle


async def test_create_batch_is_idempotent_and_returns_existing_ids(
    dynamic: Dynamic, db_path: Path
) -> None:
    v1 = await dynamic.registry.register("acme", "plans", plan("v1", wait=True))
    acme = dynamic.tenant("acme")
    first = await acme.create_batch([{"id": "a", "params": {"n": 1}}, {"id": "b"}, {}])
    assert [i.id for i in first][:2] == ["a", "b"]
    generated = first[2].id
    assert generated not in ("a", "b")
    for instance in first:
        assert await instance.code() == v1
        await settle(instance, "waiting")

    v2 = await dynamic.registry.register("acme", "plans", plan("v2", wait=True))
    again = await acme.create_batch([{"id": "a", "params": {"n": 99}}, {"id": "c"}])
    assert [i.id for i in again] == ["a", "c"]
    assert (await again[0].status()).params == {"n": 1}  # existing: not overwritten
    assert await again[0].code() == v1  # nor re-pinned
    assert await again[1].code() == v2
    assert sorted(str(r[0]) for r in rows(
        db_path, "SELECT id FROM instances WHERE tenant = 'acme'"
    )) == sorted(["acme.a", "acme.b", "acme.c", f"acme.{generated}"])
    assert envelope_of(db_path, "acme.c")["code"] == v2.as_dict()

    await again[0].send_event("go")
    details = await settle(await acme.get("a"))
    assert details.output["tag"] == "v1"
    assert details.output["params"] == {"n": 1}


async def test_create_batch_never_returns_another_tenants_instance(
    dynamic: Dynamic, db_path: Path
) -> None:
    await dynamic.registry.register("acme", "plans", plan("acme"))
    await dynamic.registry.register("globex", "plans", plan("globex"))
    (theirs,) = await dynamic.tenant("acme").create_batch([{"id": "a", "params": "acme's"}])
    (mine,) = await dynamic.tenant("globex").create_batch([{"id": "a", "params": "globex's"}])
    assert (await settle(mine)).output["params"] == "globex's"
    assert (await settle(theirs)).output["params"] == "acme's"
    assert rows(db_path, "SELECT id, tenant FROM instances ORDER BY id") == [
        ("acme.a", "acme"), ("globex.a", "globex"),
    ]


async def test_a_bad_batch_creates_nothing(dynamic: Dynamic, db_path: Path) -> None:
    await dynamic.registry.register("acme", "plans", plan("acme"))
    acme = dynamic.tenant("acme")
    with pytest.raises(af.InvalidArgumentError):
        await acme.create_batch([{"id": "ok"}, {"id": "x", "extra": 1}])
    with pytest.raises(af.InvalidIdError):
        await acme.create_batch([{"id": "ok"}, {"id": "not ok"}])
    with pytest.raises(af.InvalidArgumentError):
        await acme.create_batch({"id": "ok"})  # type: ignore[dict-item]
    assert rows(db_path, "SELECT count(*) FROM instances") == [(0,)]
