"""Approve from a notebook: an ipywidgets inbox of the open approval gates.

    from agentflow.notebook import ApprovalInbox
    inbox = ApprovalInbox(engine, tenant="acme")   # display it: the last line of a cell
    # each card shows the prompt, the data and an excerpt of the plan, with a comment box
    # and Approve / Reject buttons; the inbox refreshes itself as requests come and go.

Needs the ``notebook`` extra (``pip install 'agentflow[notebook]'``).
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
from typing import Any

from .approvals import KEEP, ApprovalRequest
from .dispatch.envelope import unwrap
from .dispatch.registry import CodeRegistry
from .engine import Engine
from .errors import AgentflowError

try:
    import ipywidgets as widgets  # type: ignore[import-untyped]
except ImportError as exc:  # pragma: no cover - exercised without the extra only
    raise ImportError(
        "agentflow.notebook needs ipywidgets: pip install 'agentflow[notebook]'"
    ) from exc

EXCERPT_LINES = 4


class ApprovalCard:
    """One open gate: what is asked, and the buttons that decide it."""

    def __init__(self, inbox: ApprovalInbox, request: ApprovalRequest, excerpt: str | None):
        self.inbox = inbox
        self.request = request
        self.comment = widgets.Textarea(placeholder="comment (optional)", rows=2)
        self.approve_button = widgets.Button(description="Approve", button_style="success",
                                             icon="check")
        self.reject_button = widgets.Button(description="Reject", button_style="danger",
                                            icon="times")
        self.status = widgets.HTML()
        self.pending: asyncio.Task[bool] | None = None  # the decision being sent
        self.approve_button.on_click(lambda _: self._start(True))
        self.reject_button.on_click(lambda _: self._start(False))
        parts = [widgets.HTML(_header(request)), widgets.HTML(_block("data", request.data))]
        if excerpt:
            parts.append(widgets.HTML(f"<b>plan</b><pre>{html.escape(excerpt)}</pre>"))
        parts += [self.comment, widgets.HBox([self.approve_button, self.reject_button]),
                  self.status]
        self.widget = widgets.VBox(parts, layout=widgets.Layout(
            border="1px solid #ccc", padding="6px", margin="4px 0"))

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.request.instance_id, self.request.gate, self.request.count)

    def _start(self, approved: bool) -> None:
        self.pending = asyncio.ensure_future(self.decide(approved))

    async def decide(self, approved: bool) -> bool:
        """Send the decision (what the buttons do); True when it was taken."""
        self.approve_button.disabled = self.reject_button.disabled = True
        request = self.request
        try:
            instance = await self.inbox.engine.get(request.instance_id,
                                                   workflow=request.workflow_name)
            decide = instance.approve if approved else instance.reject
            await decide(request.gate, by=self.inbox.by, comment=self.comment.value or None,
                         version=request.version if request.version is not None else KEEP)
        except AgentflowError as exc:
            self.status.value = f"<span style='color:#b00'>{html.escape(str(exc))}</span>"
            self.approve_button.disabled = self.reject_button.disabled = False
            return False
        verdict = "approved" if approved else "rejected"
        self.status.value = f"<b>{verdict}</b> by {html.escape(self.inbox.by)}"
        self.inbox.decided.append((request, approved))
        return True


class ApprovalInbox:
    """The open approval gates of ``engine`` (optionally one tenant's or one workflow's),
    as cards; refreshed every ``refresh`` seconds once displayed (or after ``start()``)."""

    def __init__(self, engine: Engine, *, tenant: str | None = None,
                 workflow: str | None = None, by: str = "notebook",
                 refresh: float = 1.0) -> None:
        self.engine = engine
        self.tenant = tenant
        self.workflow = workflow
        self.by = by
        self.interval = refresh
        self.cards: list[ApprovalCard] = []
        self.decided: list[tuple[ApprovalRequest, bool]] = []
        self.title = widgets.HTML()
        self.box = widgets.VBox()
        self.widget = widgets.VBox([self.title, self.box])
        self._task: asyncio.Task[None] | None = None
        self._sources: dict[str, str | None] = {}

    async def refresh(self) -> list[ApprovalCard]:
        """Fetch the open gates; keep the cards of those still open, add the new ones."""
        found = await self.engine.approvals(tenant=self.tenant, workflow=self.workflow,
                                            limit=200)
        current = {card.key: card for card in self.cards}
        cards = []
        for request in found:
            key = (request.instance_id, request.gate, request.count)
            card = current.get(key)
            if card is None:
                card = ApprovalCard(self, request, await self._excerpt(request))
            cards.append(card)
        self.cards = cards
        self.box.children = tuple(card.widget for card in cards)
        self.title.value = (f"<h4>Approvals: {len(cards)} open</h4>" if cards
                            else "<h4>Approvals: none open</h4>")
        return cards

    def start(self) -> None:
        """Refresh in the background on the running event loop (a notebook's)."""
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._refreshing())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def _refreshing(self) -> None:
        while True:
            with contextlib.suppress(AgentflowError):
                await self.refresh()
            await asyncio.sleep(self.interval)

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        with contextlib.suppress(RuntimeError):  # no running loop: shown without refreshing
            self.start()
        return self.widget._repr_mimebundle_(**kwargs)

    async def _excerpt(self, request: ApprovalRequest) -> str | None:
        """A plan's own excerpt: the summary a plan-approval gate carries, or the lines of
        a dispatched plan around the gate."""
        data = request.data if isinstance(request.data, dict) else {}
        summary = data.get("summary_text")
        if isinstance(summary, str):
            diff = data.get("diff")
            return summary + (f"\n\n{diff}" if isinstance(diff, str) else "")
        source = await self._source(request)
        return _around(source, request.gate) if source else None

    async def _source(self, request: ApprovalRequest) -> str | None:
        if request.tenant_id is None:
            return None
        if request.instance_id not in self._sources:
            try:
                instance = await self.engine.get(request.instance_id,
                                                 workflow=request.workflow_name)
                envelope, _ = unwrap((await instance.status()).params)
                source: str | None = await CodeRegistry(self.engine).source(envelope.code)
            except AgentflowError:
                source = None
            self._sources[request.instance_id] = source
        return self._sources[request.instance_id]


def _around(source: str, gate: str, lines: int = EXCERPT_LINES) -> str | None:
    text = source.splitlines()
    for number, line in enumerate(text):
        if repr(gate) in line or json.dumps(gate) in line:
            start, end = max(0, number - lines), min(len(text), number + lines + 1)
            return "\n".join(f"{n + 1:4} {text[n]}" for n in range(start, end))
    return None


def _header(request: ApprovalRequest) -> str:
    who = f" · tenant {html.escape(request.tenant_id)}" if request.tenant_id else ""
    version = f" · version {html.escape(request.version[:12])}" if request.version else ""
    return (f"<b>{html.escape(request.gate)}</b> — {html.escape(request.instance_id)} "
            f"({html.escape(request.workflow_name)}{who}{version})<br>"
            f"<span>{html.escape(request.prompt)}</span>")


def _block(title: str, value: Any) -> str:
    text = json.dumps(value, indent=2, default=str)
    return f"<b>{title}</b><pre>{html.escape(text)}</pre>"

