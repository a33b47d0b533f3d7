"""Planners: the model writes the plan, agentflow runs it.

    from planners import Agent, LLMPlanner

    planner = LLMPlanner("openai:gpt-4.1-mini")          # or a langchain-core chat model
    async with Agent(engine, planner, [checkout, deploy], tenant_id="acme",
                     needs_approval=["deploy"]) as agent:
        result = await agent.run("release 1.4.0", params={"version": "1.4.0"})
"""

from ._runtime import PLAN_GATE, PlanNotApprovedError
from .agent import Agent, AgentAttempt, AgentResult, PlanRecord
from .draft import PlanAttempt, PlanDraft, Provenance
from .errors import MissingDependencyError, ModelError, PlannerError, PlanningFailed
from .gates import ApprovalRequiredError, check_gates
from .models import (
    ChatModel,
    Completion,
    LangChainChatModel,
    Message,
    OpenAIChatModel,
    ScriptedChatModel,
    Usage,
    load_model,
)
from .planner import LLMPlanner, Planner, PlanRequest, Revision, validate_plan
from .prompt import APPROVAL_EVENT, extract_source, system_prompt
from .summary import PlanSummary, StepSummary, plan_diff, summarize
from .tools import Tool, from_callable, from_langchain, to_tools, tool

__all__ = [
    "APPROVAL_EVENT",
    "PLAN_GATE",
    "Agent",
    "AgentAttempt",
    "AgentResult",
    "ApprovalRequiredError",
    "ChatModel",
    "Completion",
    "LLMPlanner",
    "LangChainChatModel",
    "Message",
    "MissingDependencyError",
    "ModelError",
    "OpenAIChatModel",
    "PlanAttempt",
    "PlanDraft",
    "PlanNotApprovedError",
    "PlanRecord",
    "PlanRequest",
    "PlanSummary",
    "PlannerError",
    "Planner",
    "PlanningFailed",
    "Provenance",
    "Revision",
    "ScriptedChatModel",
    "StepSummary",
    "Tool",
    "Usage",
    "check_gates",
    "extract_source",
    "from_callable",
    "from_langchain",
    "load_model",
    "plan_diff",
    "summarize",
    "system_prompt",
    "to_tools",
    "tool",
    "validate_plan",
]
