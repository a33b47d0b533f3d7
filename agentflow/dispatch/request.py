"""What a tenant-code loader is asked for, and the shape of a loader."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..workflow import Runner
from .envelope import CodeRef


@dataclass(frozen=True, slots=True)
class DispatchRequest:
    """What a loader gets: whose code, which version, the metadata and the caller's context."""

    tenant_id: str
    code: CodeRef
    metadata: dict[str, Any]
    context: Mapping[str, Any] = field(default_factory=dict)


LoadRunner = Callable[[DispatchRequest], Runner | Awaitable[Runner]]
