"""The agentflow pytest plugin (entry point ``pytest11``), loaded wherever agentflow is
installed. Fixtures:

- ``agentflow_clock``: a :class:`~agentflow.FakeClock`;
- ``agentflow_engine``: an engine on a temporary SQLite file, on that clock;
- ``agentflow_env``: a :class:`TimeSkippingEnv` for them (``await env.run(instance)``).

Marker ``@pytest.mark.agentflow_cassette("name.yaml")`` replays the test's HTTP traffic from
``cassettes/name.yaml`` next to the test file; ``pytest --agentflow-record=once`` (or
``all``) records it instead, e.g. against a real provider configured in the environment.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ..clock import FakeClock


def _async_fixture_decorator() -> Callable[[Any], Any]:
    try:
        import pytest_asyncio
    except ImportError:  # pragma: no cover - async fixtures then need another plugin
        return pytest.fixture
    decorator: Callable[[Any], Any] = pytest_asyncio.fixture
    return decorator


_async_fixture = _async_fixture_decorator()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("agentflow")
    group.addoption("--agentflow-record", default="none",
                    choices=("none", "once", "new_episodes", "all"),
                    help="record mode of @pytest.mark.agentflow_cassette (default: none, "
                         "replay only: a request not in the cassette fails)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "agentflow_cassette(name): replay the test's HTTP exchanges (LLM calls) "
        "from cassettes/<name> next to the test file")


@pytest.fixture
def agentflow_clock() -> FakeClock:
    return FakeClock()


@_async_fixture
async def agentflow_engine(tmp_path: Path, agentflow_clock: FakeClock) -> AsyncIterator[Any]:
    from ..engine import Engine

    async with Engine.open(f"sqlite:///{tmp_path / 'agentflow-test.db'}", clock=agentflow_clock,
                           poll_interval=0.01) as engine:
        yield engine


@_async_fixture
async def agentflow_env(agentflow_engine: Any, agentflow_clock: FakeClock) -> Any:
    from .env import TimeSkippingEnv

    return TimeSkippingEnv(agentflow_engine, agentflow_clock)


@pytest.fixture(autouse=True)
def _agentflow_cassette(request: pytest.FixtureRequest) -> Iterator[None]:
    marker = request.node.get_closest_marker("agentflow_cassette")
    if marker is None:
        yield
        return
    from .cassettes import use_cassette

    name = marker.args[0] if marker.args else f"{request.node.name}.yaml"
    path = Path(str(request.node.fspath)).parent / "cassettes" / name
    mode = marker.kwargs.get("record_mode") or request.config.getoption("--agentflow-record")
    with use_cassette(path, mode):
        yield
