"""The demo's model, offline: recorded exchanges with an OpenAI-compatible chat API, replayed
with vcrpy (``agentflow.testing.cassettes``). No request leaves the process; a request the
cassette lacks is an error."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from agentflow.testing.cassettes import use_cassette, vcr_config

CASSETTE = Path(__file__).resolve().parent / "cassette.yaml"
# Never contacted: vcrpy answers every request from the cassette. Port 9 is 'discard'.
OFFLINE_BASE_URL = "http://127.0.0.1:9/v1"
MODEL = "gpt-4.1-mini"

__all__ = ["CASSETTE", "MODEL", "OFFLINE_BASE_URL", "replaying", "vcr_config"]


@contextmanager
def replaying(path: Path = CASSETTE) -> Iterator[Any]:
    if not path.exists():
        raise FileNotFoundError(f"no cassette at {path}; record it with "
                                "python -m planners.demo.record")
    with use_cassette(path, "none") as cassette:
        yield cassette
