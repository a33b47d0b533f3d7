"""Compiling a plan pauses the cyclic garbage collector (its syntax tree is thousands of
acyclic objects that would set off collections of the whole process) and leaves it as it
was."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from typing import Any

import pytest

import sandbox

HELPERS = "\n".join(
    f"def helper_{n}(items):\n    total = {n}\n    for item in items:\n"
    f"        total += item * 2\n    return {{'n': total}}\n"
    for n in range(20)
)
PLAN = HELPERS + """
async def run(event, step):
    data = event.payload or []
    first = await step.do('first', lambda: helper_0(data))
    return [first] + [helper_1(data) for _ in range(3)]
"""


@pytest.fixture
def collections() -> Iterator[list[int]]:
    """The generations of the collections that run meanwhile."""
    seen: list[int] = []

    def callback(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            seen.append(info["generation"])

    gc.collect()
    gc.callbacks.append(callback)
    try:
        yield seen
    finally:
        gc.callbacks.remove(callback)


def test_compiling_plans_sets_off_few_collections(collections: list[int]) -> None:
    assert gc.isenabled()
    for n in range(20):
        sandbox.compile_plan(f"{PLAN}# {n}\n")
        sandbox.validate(f"{PLAN}# v{n}\n")
    # What outlives a compile (the compiled plans, the last validations' trees kept for
    # their compile) still counts towards the next collection: a few for 40 plans, where the
    # trees alone set off several per plan.
    assert len(collections) <= 10, collections
    assert gc.isenabled()
    # The trees are gone: what is left to collect is what the test itself made.
    assert gc.collect() < 50


def test_the_collector_stays_off_when_the_app_turned_it_off() -> None:
    gc.disable()
    try:
        sandbox.compile_plan(f"{PLAN}# off\n")
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_a_rejected_plan_leaves_the_collector_on() -> None:
    with pytest.raises(sandbox.PlanRejected):
        sandbox.compile_plan("import os\n" + PLAN)
    assert gc.isenabled()
