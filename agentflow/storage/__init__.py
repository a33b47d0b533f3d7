"""Storage backends behind one Protocol; ``storage_from_url(url)`` picks one from a URL."""

from __future__ import annotations

from pathlib import Path

from ..errors import InvalidArgumentError
from .protocol import Decide, LeaseLost, Storage
from .records import (
    ApprovalRow,
    Change,
    CodeRow,
    HistoryItem,
    HistoryRow,
    InboxEvent,
    InstanceRow,
    StartNow,
    StepRecord,
)
from .sqlite import SqliteStorage


def storage_from_url(url: str | Path) -> Storage:
    """``sqlite:///relative.db``, ``sqlite:////abs/path.db``, ``sqlite:///:memory:``, a path,
    or ``postgresql://user@host:port/database``."""
    if isinstance(url, Path):
        return SqliteStorage(url)
    if not isinstance(url, str):
        raise InvalidArgumentError(f"database URL must be a string, got {type(url).__name__}")
    if url.startswith("sqlite://"):
        path = url.removeprefix("sqlite://")
        path = path[1:] if path.startswith("/") else path
        if not path:
            raise InvalidArgumentError(
                f"database URL {url!r} names no file; use sqlite:///agentflow.db"
            )
        return SqliteStorage(path)
    if url.startswith(("postgres://", "postgresql://")):
        from .postgres import PostgresStorage  # needs psycopg: the 'postgres' extra

        return PostgresStorage(url)
    if "://" in url:
        raise InvalidArgumentError(
            f"unsupported database URL {url!r}; use sqlite:///path/to/file.db or "
            "postgresql://user@host/database"
        )
    return SqliteStorage(url)


__all__ = [
    "ApprovalRow",
    "Change",
    "CodeRow",
    "Decide",
    "HistoryItem",
    "HistoryRow",
    "InboxEvent",
    "InstanceRow",
    "LeaseLost",
    "SqliteStorage",
    "StartNow",
    "StepRecord",
    "Storage",
    "storage_from_url",
]
