"""The plan policy walks the tree its own, faster way (its own visit dispatch, fields rewritten
in place, leaf nodes skipped, new nodes placed without a full pass). It must transform every
plan exactly as RestrictedPython's own walk does, and report the same errors."""

from __future__ import annotations

import ast

import pytest
from RestrictedPython.transformer import RestrictingNodeTransformer

import sandbox
from sandbox._policy import PlanPolicy
from tests.sandbox import test_benign, test_escapes


def _reference_policy() -> type[PlanPolicy]:
    """PlanPolicy's own rules on RestrictedPython's unmodified walk and placement."""
    stock = {name: value for name, value in vars(RestrictingNodeTransformer).items()
             if callable(value) and vars(PlanPolicy.__mro__[1]).get(name) is not None}
    stock["visit"] = ast.NodeVisitor.visit
    stock["node_contents_visit"] = RestrictingNodeTransformer.node_contents_visit
    # (its own rules, but not its faster copies of RestrictedPython's visitors: those are
    # what is compared)
    own = {name: value for name, value in vars(PlanPolicy).items()
           if name.startswith("visit_") and name not in PlanPolicy.FAST_EQUIVALENTS}
    originals = {name: vars(RestrictingNodeTransformer)[original]
                 for name, original in PlanPolicy.FAST_EQUIVALENTS.items()}
    return type("ReferencePolicy", (PlanPolicy,), {**stock, **own, **originals})


Reference = _reference_policy()


def _transformed(policy: type[RestrictingNodeTransformer], source: str) -> tuple[str, list[str]]:
    tree = ast.parse(source)
    walker = policy()
    walker.visit(tree)
    ast.fix_missing_locations(tree)
    return ast.dump(tree, include_attributes=True), sorted(walker.errors)


NAMES = '''
import json

def helper(x):
    _ = x
    a__roles__ = 1
    builtins = 2
    print = 3
    printed = 4
    return builtins

async def run(event, step):
    __x = 1
    _y = event.payload
    value = await step.do("a", lambda: helper(_y))
    print(value, builtins, printed)
    del value
    return [x for x in range(3)] + [json.dumps(None)]
'''


def _sources() -> list[tuple[str, str]]:
    benign = [(name, value) for name, value in vars(test_benign).items()
              if name.isupper() and isinstance(value, str) and "async def run" in value]
    attacks = [(a.id, a.source) for a in test_escapes.ATTACKS]
    extra = [("augmented-and-print", (
        "def helper(d, k):\n    d[k] += 1\n    x = d.get(k)\n    x **= 2\n    print(x)\n"
        "    return printed\n\nasync def run(event, step):\n"
        "    a, *rest = [1, 2, 3]\n    f = lambda *args, **kw: (args, kw)\n"
        "    return f(*rest, **{'k': a}), [i for i in range(3) if i], {k: v for k, v in []}\n")),
        ("names", NAMES)]
    return benign + attacks + extra


@pytest.mark.parametrize(("name", "source"), _sources(), ids=[n for n, _ in _sources()])
def test_the_fast_walk_transforms_exactly_as_restrictedpython(name: str, source: str) -> None:
    try:
        expected = _transformed(Reference, source)
    except SyntaxError:
        pytest.skip("not Python")
    assert _transformed(PlanPolicy, source) == expected


def test_the_corpus_covers_both_accepted_and_rejected_plans() -> None:
    verdicts = {sandbox.validate(source).ok for _, source in _sources()}
    assert verdicts == {True, False}
    assert len(_sources()) > 100


def test_a_rewritten_node_gets_the_position_of_the_code_it_replaces() -> None:
    tree = ast.parse("async def run(event, step):\n    return event.payload['k'].upper()\n")
    PlanPolicy().visit(tree)
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)
             and isinstance(n.func, ast.Name) and n.func.id in ("_getattr_", "_getitem_")]
    assert calls
    for call in calls:
        for node in ast.walk(call):
            if "lineno" in node._attributes:
                assert node.lineno == 2 and node.end_lineno == 2
