"""Tenant plan code in the engine's storage: (tenant, name) -> versions, by sha256."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

import sandbox

from .. import _validate as validate
from ..engine import Engine
from ..errors import NotFoundError
from ..records import _utc
from .envelope import CodeRef


class CodeNotFoundError(NotFoundError):
    """No code is registered for this tenant and name (or sha256)."""


@dataclass(frozen=True, slots=True)
class CodeVersion:
    ref: CodeRef
    version: int
    created_at: datetime


class CodeRegistry:
    """Register and look up tenants' plans. A plan that fails validation is never stored."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    async def register(
        self, tenant_id: str, name: str, source: str, *, tools: Iterable[str] | None = None,
    ) -> CodeRef:
        """Validate ``source`` (``sandbox.PlanRejected`` with the report if it is not a valid
        plan) and store it as the newest version of (tenant, name)."""
        validate.instance_id(tenant_id)
        validate.instance_id(name)
        report = sandbox.validate(source, tools=tools)
        if not report.ok:
            raise sandbox.PlanRejected(report)
        sha = hashlib.sha256(source.encode()).hexdigest()
        engine = self._engine
        engine._check_open()
        await engine._storage.put_code(tenant_id, name, sha, source, engine.clock.now())
        return CodeRef(tenant_id, name, sha)

    async def versions(self, tenant_id: str, name: str) -> list[CodeVersion]:
        rows = await self._engine._storage.code_versions(tenant_id, name)
        return [
            CodeVersion(CodeRef(r.tenant, r.name, r.sha256), r.version, _utc(r.created_at))
            for r in rows
        ]

    async def latest(self, tenant_id: str, name: str) -> CodeRef:
        versions = await self.versions(tenant_id, name)
        if not versions:
            raise CodeNotFoundError(
                f"tenant {tenant_id!r} has no code named {name!r}; register it first with "
                "CodeRegistry.register(tenant_id, name, source)"
            )
        return versions[-1].ref

    async def source(self, ref: CodeRef) -> str:
        row = await self._engine._storage.get_code(ref.tenant_id, ref.sha256)
        if row is None:
            raise CodeNotFoundError(f"tenant {ref.tenant_id!r} has no code {ref.sha256[:12]}")
        return row.source
