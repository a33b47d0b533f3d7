"""Testing agents: a time-skipping engine, recorded runs, replay with divergence reports,
and cassettes of LLM traffic. The pytest plugin (``agentflow.testing.plugin``) is registered
automatically and provides the fixtures ``agentflow_engine``, ``agentflow_clock`` and
``agentflow_env``.

    run = await export_run(instance)          # in production (or from the CLI)
    run.save("tests/runs/release.json")
    ...
    report = await replay(new_plan_source, RecordedRun.load("tests/runs/release.json"))
    assert report.ok, report.divergence
"""

from .cassettes import use_cassette, vcr_config
from .env import TimeSkippingEnv
from .history import RecordedRun, export_run
from .replay import (
    Divergence,
    ReplayDivergenceError,
    ReplayReport,
    ReplayStep,
    assert_replays,
    replay,
)

__all__ = [
    "Divergence",
    "RecordedRun",
    "ReplayDivergenceError",
    "ReplayReport",
    "ReplayStep",
    "TimeSkippingEnv",
    "assert_replays",
    "export_run",
    "replay",
    "use_cassette",
    "vcr_config",
]
