"""Recorded LLM traffic for tests: vcrpy cassettes with secrets filtered out.

A cassette is matched on the HTTP method, the path and the requested model, and plays its
recordings in order: rewording a prompt does not break a replay, changing the model does.
Headers and query parameters that carry credentials are never written to a cassette.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

SECRET_HEADERS = ("authorization", "api-key", "x-api-key", "openai-organization",
                  "openai-project", "cookie", "set-cookie", "x-goog-api-key")
SECRET_PARAMS = ("api_key", "key", "access_token")
RECORD_MODES = ("none", "once", "new_episodes", "all")


def same_model(r1: Any, r2: Any) -> None:
    """vcrpy matcher: two requests match when they ask for the same model."""
    assert _model(r1) == _model(r2), f"model {_model(r1)!r} != {_model(r2)!r}"


def _model(request: Any) -> Any:
    try:
        body = json.loads(request.body or b"{}")
    except (ValueError, TypeError):
        return None
    return body.get("model") if isinstance(body, dict) else None


def vcr_config(record_mode: str = "none") -> Any:
    """A ``vcr.VCR`` set up for LLM APIs."""
    if record_mode not in RECORD_MODES:
        raise ValueError(f"record_mode must be one of {RECORD_MODES}, got {record_mode!r}")
    try:
        import vcr  # type: ignore[import-untyped]
    except ImportError:
        raise ImportError("cassettes need vcrpy: pip install 'agentflow[cassettes]'") from None
    config = vcr.VCR(record_mode=record_mode, match_on=["method", "path", "model"],
                     filter_headers=list(SECRET_HEADERS),
                     filter_query_parameters=list(SECRET_PARAMS),
                     decode_compressed_response=True)
    config.register_matcher("model", same_model)
    return config


@contextmanager
def use_cassette(path: str | Path, record_mode: str = "none") -> Iterator[Any]:
    """Replay (or record, with another ``record_mode``) the HTTP exchanges in ``path``."""
    target = Path(path)
    if record_mode == "none" and not target.exists():
        raise FileNotFoundError(
            f"no cassette at {target}; record it once against a real or loopback server "
            "with record_mode='once' (pytest --agentflow-record=once)")
    target.parent.mkdir(parents=True, exist_ok=True)
    with vcr_config(record_mode).use_cassette(str(target),
                                              allow_playback_repeats=False) as cassette:
        yield cassette
