"""The demo's model, offline: recorded exchanges with an OpenAI-compatible chat API, replayed
with vcrpy. No request leaves the process; a request the cassette lacks is an error."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import missing

CASSETTE = Path(__file__).resolve().parent / "cassette.yaml"
# Never contacted: vcrpy answers every request from the cassette. Port 9 is 'discard'.
OFFLINE_BASE_URL = "http://127.0.0.1:9/v1"
MODEL = "gpt-4.1-mini"


def same_model(r1: Any, r2: Any) -> None:
    """vcrpy matcher: the requested model, not the exact prompt text, picks the recording;
    recordings play in order, so prompt wording may change without re-recording."""
    def model(request: Any) -> Any:
        try:
            return json.loads(request.body or b"{}").get("model")
        except ValueError:
            return None
    assert model(r1) == model(r2), f"model {model(r1)!r} != {model(r2)!r}"


def vcr_config(record_mode: str = "none") -> Any:
    try:
        import vcr  # type: ignore[import-untyped]
    except ImportError:
        raise missing("vcrpy", "cassettes") from None
    config = vcr.VCR(record_mode=record_mode, match_on=["method", "path", "model"],
                     filter_headers=["authorization", "cookie", "set-cookie"],
                     decode_compressed_response=True)
    config.register_matcher("model", same_model)
    return config


@contextmanager
def replaying(path: Path = CASSETTE) -> Iterator[Any]:
    if not path.exists():
        raise FileNotFoundError(f"no cassette at {path}; record it with "
                                "python -m tests.planners.record_cassettes")
    with vcr_config("none").use_cassette(str(path)) as cassette:
        yield cassette
