"""Fixtures of the dispatch suite: a dynamic workflow on the engine of tests/conftest.py."""

from __future__ import annotations

import pytest

import agentflow as af
from agentflow.dispatch import CodeRegistry, Loader, create_dynamic_workflow_entrypoint
from tests.dispatch._support import WORKFLOW, Dynamic, ToolLog


@pytest.fixture
def registry(engine: af.Engine) -> CodeRegistry:
    return CodeRegistry(engine)


@pytest.fixture
def dynamic(engine: af.Engine, registry: CodeRegistry) -> Dynamic:
    log = ToolLog()
    loader = Loader(engine, mode="in-process", tools_for=log.tools_for, capacity=16)
    binding = engine.register(WORKFLOW, create_dynamic_workflow_entrypoint(loader))
    return Dynamic(engine, binding, registry, loader, log)
