"""The notebook inbox driven directly (no kernel): cards for open gates, the buttons decide,
errors show on the card, refresh follows the inbox, excerpts show the plan."""

from __future__ import annotations

import html

import pytest

import agentflow as af
from agentflow.dispatch import (
    CodeRegistry,
    Loader,
    create_dynamic_workflow_entrypoint,
    wrap_workflow_binding,
)
from planners import PLAN_GATE, Agent, LLMPlanner, ScriptedChatModel
from tests.approvals.conftest import at_gate, finished, gated_flow, open_gates
from tests.approvals.test_dispatch_approvals import buying_plan

pytest.importorskip("ipywidgets")
from agentflow.notebook import ApprovalCard, ApprovalInbox

WORKFLOW = "nb-gates"


@pytest.fixture
def gates(engine: af.Engine, seen: list[af.Decision]) -> af.WorkflowBinding:
    return engine.register(WORKFLOW, gated_flow(seen))


def texts(card: ApprovalCard) -> str:
    return "\n".join(html.unescape(getattr(child, "value", "") or "")
                     for child in card.widget.children)


def excerpt(card: ApprovalCard) -> str | None:
    for child in card.widget.children:
        value = getattr(child, "value", "")
        if isinstance(value, str) and value.startswith("<b>plan</b>"):
            return html.unescape(value)
    return None


async def test_one_card_per_gate_and_the_buttons_decide(
    engine: af.Engine, gates: af.WorkflowBinding, seen: list[af.Decision],
) -> None:
    first = await at_gate(gates, "nb-1", target="eu")
    second = await at_gate(gates, "nb-2", target="us")
    inbox = ApprovalInbox(engine, by="ada")
    cards = await inbox.refresh()
    assert [c.request.instance_id for c in cards] == ["nb-1", "nb-2"]
    assert inbox.cards == cards
    assert "2 open" in inbox.title.value
    assert len(inbox.box.children) == 2
    assert "Deploy the build to eu?" in texts(cards[0])
    assert '"target": "eu"' in texts(cards[0])
    assert excerpt(cards[0]) is None  # static code: no plan to show

    cards[0].comment.value = "ship it"
    cards[0].approve_button.click()
    assert cards[0].pending is not None
    assert await cards[0].pending is True
    assert "approved" in cards[0].status.value and "ada" in cards[0].status.value
    details = await finished(first)
    assert details.output["comment"] == "ship it" and details.output["by"] == "ada"

    cards[1].comment.value = "not this week"
    cards[1].reject_button.click()
    assert await cards[1].pending is True  # type: ignore[misc]
    assert "rejected" in cards[1].status.value
    details = await finished(second)
    assert details.output == {"outcome": "skipped", "reason": "rejected", "by": "ada",
                              "comment": "not this week"}
    assert [(r.instance_id, ok) for r, ok in inbox.decided] == [("nb-1", True),
                                                                ("nb-2", False)]


async def test_a_card_decided_elsewhere_shows_the_error(
    engine: af.Engine, gates: af.WorkflowBinding,
) -> None:
    instance = await at_gate(gates, "nb-3")
    inbox = ApprovalInbox(engine)
    [card] = await inbox.refresh()
    await instance.approve(by="cli user")  # someone else was faster
    card.approve_button.click()
    assert await card.pending is False  # type: ignore[misc]
    assert "decided already" in html.unescape(card.status.value)
    assert not card.approve_button.disabled and not card.reject_button.disabled
    assert inbox.decided == []
    assert (await finished(instance)).output["by"] == "cli user"


async def test_refresh_drops_decided_cards_and_adds_new_ones(
    engine: af.Engine, gates: af.WorkflowBinding,
) -> None:
    first = await at_gate(gates, "nb-4")
    second = await at_gate(gates, "nb-5")
    inbox = ApprovalInbox(engine, workflow=WORKFLOW)
    before = await inbox.refresh()
    await first.reject()
    await finished(first)
    third = await at_gate(gates, "nb-6")
    after = await inbox.refresh()
    assert [c.request.instance_id for c in after] == ["nb-5", "nb-6"]
    assert after[0] is before[1]  # the open gate keeps its card (and its comment box)
    assert len(inbox.box.children) == 2
    await second.approve()
    await third.approve()
    await finished(second)
    await finished(third)
    assert await inbox.refresh() == []
    assert "none open" in inbox.title.value


async def test_a_tenant_inbox_shows_the_plan_around_the_gate(engine: af.Engine) -> None:
    loader = Loader(engine, mode="in-process",
                    tools_for=lambda tenant: {"lookup": lambda item: f"{tenant}:{item}"})
    binding = engine.register("nb-plans", create_dynamic_workflow_entrypoint(loader))
    registry = CodeRegistry(engine)
    acme_code = await registry.register("acme", "nb-plans", buying_plan("acme"))
    await registry.register("globex", "nb-plans", buying_plan("globex"))
    acme = wrap_workflow_binding(binding, tenant_id="acme")
    globex = wrap_workflow_binding(binding, tenant_id="globex")
    mine = await acme.create("po-1", params={"item": "anvil"})
    theirs = await globex.create("po-2", params={"item": "gear"})
    await open_gates(mine)
    await open_gates(theirs)

    inbox = ApprovalInbox(engine, tenant="acme", by="wile")
    [card] = await inbox.refresh()
    assert card.request.tenant_id == "acme" and card.request.version == acme_code.sha256
    assert "tenant acme" in texts(card) and acme_code.sha256[:12] in texts(card)
    shown = excerpt(card)
    assert shown is not None
    assert '   5         "buy", prompt="Buy " + item + "?"' in shown  # the gate's line
    assert "   1 async def run(event, step):" in shown
    assert "price = await step.do" in shown

    card.approve_button.click()
    assert await card.pending is True  # type: ignore[misc]
    details = await mine.wait(timeout=10)
    assert details.output["by"] == "wile" and details.output["version"] == acme_code.sha256
    assert len(await globex.approvals()) == 1  # the other tenant's gate is untouched


async def test_a_plan_approval_card_shows_the_summary(engine: af.Engine) -> None:
    plan = ("```python\nasync def run(event, step):\n"
            "    return await step.do('add', lambda: tools.add(1, 2))\n```")

    def add(a: int, b: int) -> int:
        """Add."""
        return a + b

    async with Agent(engine, LLMPlanner(ScriptedChatModel([plan])), [add], tenant_id="nb",
                     approve_plans=True, sandbox="in-process",
                     workflow="nb-agent") as agent:
        instance = await agent.start("add", id="sum")
        await open_gates(instance)
        inbox = ApprovalInbox(engine, tenant="nb")
        [card] = await inbox.refresh()
        assert card.request.gate == PLAN_GATE
        shown = excerpt(card)
        assert shown is not None
        assert "line   2  step     add -> tools.add" in shown
        card.approve_button.click()
        assert await card.pending is True  # type: ignore[misc]
        details = await instance.wait(timeout=10)
    assert details.status == "complete", details.error
    assert details.output == 3
