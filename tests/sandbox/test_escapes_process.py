"""The escape corpus of ``test_escapes`` again, with every plan in a sandbox process.

Each plan is rejected (by ``validate`` and by ``SandboxPool.runner`` alike) or runs in a warm
sandbox process through the real engine without getting out: the instance errors or returns
plain data without the marker, the canary file is neither read nor written, no file appears in
the test directory or in the sandbox's working directory, and nothing in this process changes.
One pool serves the whole module.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

import sandbox
from sandbox.process import Limits, SandboxCrashed, SandboxPool, _load
from tests.sandbox._harness import (
    Snapshot,
    ToolBox,
    run_plan_in_pool,
    sandbox_workdirs_are_empty,
)
from tests.sandbox.test_escapes import ATTACKS, BYPASS, Attack, assert_contained

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def pool() -> AsyncIterator[SandboxPool]:
    async with SandboxPool(size=2, max_size=4, limits=Limits(cpu_seconds=2.0)) as pool:
        yield pool


@pytest.mark.parametrize("case", ATTACKS, ids=[a.id for a in ATTACKS])
async def test_attack_is_contained_in_a_sandbox_process(
    case: Attack, tmp_path: Path, pool: SandboxPool
) -> None:
    snapshot = Snapshot.take(tmp_path)
    box = ToolBox(tmp_path / "docs")
    outcome = await run_plan_in_pool(case.source, tmp_path, pool, tools=box)
    snapshot.assert_untouched()
    assert_contained(outcome, box)
    assert sandbox_workdirs_are_empty(pool), "a sandbox process wrote a file"


async def test_the_corpus_runs_plans_in_processes() -> None:
    accepted = [a for a in ATTACKS if sandbox.validate(a.source).ok]
    assert len(accepted) >= 60, "the corpus should exercise the sandbox processes"


@pytest.mark.parametrize("case", BYPASS, ids=[a.id for a in BYPASS])
async def test_the_child_validates_what_it_loads(case: Attack, pool: SandboxPool) -> None:
    """A host that skipped validation (or a load message forged by anyone) still cannot
    make the child load a plan the rules reject: the child compiles with the rules itself."""
    process = await pool._acquire("bypass")
    healthy = False
    try:
        with pytest.raises(SandboxCrashed, match="could not load"):
            await _load(process, case.source, {"fetch": print}, sandbox.DEFAULT_IMPORTS)
        healthy = True
    finally:
        await pool._release(process, healthy)


async def test_the_pool_still_serves_plans_after_the_corpus(
    tmp_path: Path, pool: SandboxPool
) -> None:
    source = ("async def run(event, step):\n"
              "    return await step.do('f', lambda: tools.fetch(event.payload['url']))\n")
    box = ToolBox(tmp_path / "docs")
    outcome = await run_plan_in_pool(source, tmp_path, pool, tools=box)
    assert outcome.details is not None and outcome.details.status == "complete"
    assert outcome.details.output == {"url": "https://example.com", "status": 200,
                                      "body": "page at https://example.com"}
