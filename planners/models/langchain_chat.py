"""Any langchain-core chat model (``BaseChatModel``) as the planner's model."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..errors import ModelError, missing
from .base import Completion, Message, Usage


class LangChainChatModel:
    def __init__(self, model: Any) -> None:
        try:
            from langchain_core.language_models import BaseChatModel
        except ImportError:
            raise missing("langchain-core", "langchain") from None
        if not isinstance(model, BaseChatModel):
            raise TypeError(
                f"LangChainChatModel wraps a langchain_core BaseChatModel, got "
                f"{type(model).__name__}"
            )
        self.model = model

    @property
    def name(self) -> str:
        model = self.model
        specific = getattr(model, "model_name", None) or getattr(model, "model", None)
        return f"langchain:{model._llm_type}" + (f":{specific}" if specific else "")

    async def complete(self, messages: Sequence[Message]) -> Completion:
        from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

        kinds = {"system": SystemMessage, "user": HumanMessage, "assistant": AIMessage}
        converted = [kinds[m.role](content=m.content) for m in messages]
        try:
            answer = await self.model.ainvoke(converted)
        except Exception as exc:
            raise ModelError(f"{self.name}: the model call failed: {exc}") from exc
        return Completion(_text(answer.content), self.name, _usage(answer))


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content blocks: keep the text ones
        return "".join(
            part if isinstance(part, str) else str(part.get("text", ""))
            for part in content if isinstance(part, (str, dict))
        )
    return str(content)


def _usage(answer: Any) -> Usage | None:
    usage = getattr(answer, "usage_metadata", None)
    if not usage:
        return None
    return Usage(int(usage.get("input_tokens", 0)), int(usage.get("output_tokens", 0)))
