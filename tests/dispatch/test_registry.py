"""The code registry: validated when registered, content-addressed, versioned per (tenant,
name), stored in the engine's database."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

import sandbox
from agentflow.dispatch import CodeNotFoundError, CodeRef, CodeRegistry
from tests.conftest import rows
from tests.dispatch._support import Dynamic, plan


def sha(source: str) -> str:
    return hashlib.sha256(source.encode()).hexdigest()


async def test_register_is_content_addressed_and_versions_increase(
    registry: CodeRegistry, db_path: Path
) -> None:
    v1, v2 = plan("v1"), plan("v2")
    ref1 = await registry.register("acme", "release", v1)
    assert ref1 == CodeRef("acme", "release", sha(v1))

    again = await registry.register("acme", "release", v1)
    assert again == ref1
    assert [v.version for v in await registry.versions("acme", "release")] == [1]

    ref2 = await registry.register("acme", "release", v2)
    assert ref2 == CodeRef("acme", "release", sha(v2))
    versions = await registry.versions("acme", "release")
    assert [(v.ref, v.version) for v in versions] == [(ref1, 1), (ref2, 2)]
    assert versions[0].created_at <= versions[1].created_at
    assert await registry.latest("acme", "release") == ref2
    assert await registry.source(ref1) == v1
    assert await registry.source(ref2) == v2
    # Registering an old version again does not make it the newest.
    assert await registry.register("acme", "release", v1) == ref1
    assert await registry.latest("acme", "release") == ref2

    assert rows(db_path, "SELECT tenant, name, sha256, version FROM code ORDER BY version") == [
        ("acme", "release", sha(v1), 1), ("acme", "release", sha(v2), 2),
    ]


async def test_versions_are_counted_per_tenant_and_name(registry: CodeRegistry) -> None:
    source = plan("same")
    await registry.register("acme", "release", plan("other"))
    acme = await registry.register("acme", "release", source)
    globex = await registry.register("globex", "release", source)
    nightly = await registry.register("acme", "nightly", source)
    assert acme.sha256 == globex.sha256 == nightly.sha256
    assert [v.version for v in await registry.versions("acme", "release")] == [1, 2]
    assert [v.version for v in await registry.versions("globex", "release")] == [1]
    assert [v.version for v in await registry.versions("acme", "nightly")] == [1]
    assert await registry.latest("globex", "release") == CodeRef("globex", "release", acme.sha256)


@pytest.mark.parametrize(
    ("source", "code"),
    [
        ("import os\n\nasync def run(event, step):\n    return os.getcwd()\n",
         "import-not-allowed"),
        ("def run(event, step):\n    return 1\n", "run-not-async"),
        ("async def run(event, step)\n    return 1\n", "syntax-error"),
        ("x = 1\n", "missing-run"),
    ],
)
async def test_a_plan_that_fails_validation_is_rejected_with_its_report_and_never_stored(
    registry: CodeRegistry, db_path: Path, source: str, code: str
) -> None:
    with pytest.raises(sandbox.PlanRejected) as caught:
        await registry.register("acme", "release", source)
    report = caught.value.report
    assert not report.ok
    assert code in report.codes
    assert report.source == source
    assert rows(db_path, "SELECT count(*) FROM code") == [(0,)]
    assert await registry.versions("acme", "release") == []
    with pytest.raises(CodeNotFoundError):
        await registry.latest("acme", "release")


async def test_the_granted_tools_are_checked_when_given(
    registry: CodeRegistry, db_path: Path
) -> None:
    source = plan("t", tool="deploy")
    with pytest.raises(sandbox.PlanRejected) as caught:
        await registry.register("acme", "release", source, tools=["lookup"])
    assert "unknown-tool" in caught.value.report.codes
    assert rows(db_path, "SELECT count(*) FROM code") == [(0,)]
    ref = await registry.register("acme", "release", source, tools=["deploy"])
    assert await registry.source(ref) == source


async def test_unknown_code_raises_code_not_found(registry: CodeRegistry) -> None:
    with pytest.raises(CodeNotFoundError) as caught:
        await registry.latest("acme", "release")
    assert "register" in str(caught.value)  # says how to fix it
    with pytest.raises(CodeNotFoundError):
        await registry.source(CodeRef("acme", "release", sha("never registered")))
    ref = await registry.register("acme", "release", plan("a"))
    # Another tenant cannot fetch acme's code by its sha.
    with pytest.raises(CodeNotFoundError):
        await registry.source(CodeRef("globex", "release", ref.sha256))


async def test_a_tenant_without_code_cannot_create_instances(
    dynamic: Dynamic, db_path: Path
) -> None:
    with pytest.raises(CodeNotFoundError):
        await dynamic.tenant("acme").create("job")
    with pytest.raises(CodeNotFoundError):
        await dynamic.tenant("acme").create_batch([{"id": "a"}])
    assert rows(db_path, "SELECT count(*) FROM instances") == [(0,)]
