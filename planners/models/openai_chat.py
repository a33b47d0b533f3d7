"""Chat models behind the OpenAI API: OpenAI itself or any compatible server (Ollama, vLLM,
LM Studio) reached by base URL."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Sequence
from typing import Any

from ..errors import ModelError, missing
from .base import Completion, Message, Usage


class OpenAIChatModel:
    """``client`` is an ``openai.AsyncOpenAI`` or ``openai.OpenAI`` (a sync client runs in a
    thread); without one, an ``AsyncOpenAI`` is made from ``base_url``/``api_key`` or the
    usual ``OPENAI_*`` environment variables."""

    def __init__(
        self,
        model: str,
        *,
        client: Any = None,
        base_url: str | None = None,
        api_key: str | None = None,
        temperature: float | None = 0.0,
        max_tokens: int | None = None,
        provider: str = "openai",
    ) -> None:
        if not isinstance(model, str) or not model:
            raise ValueError("OpenAIChatModel needs a model name, e.g. 'gpt-4.1-mini'")
        if client is None:
            try:
                import openai
            except ImportError:
                raise missing("openai", "openai") from None
            client = openai.AsyncOpenAI(base_url=base_url, api_key=api_key)
        self.client = client
        self.model = model
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.provider = provider

    @property
    def name(self) -> str:
        return f"{self.provider}:{self.model}"

    async def complete(self, messages: Sequence[Message]) -> Completion:
        request: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": m.role, "content": m.content} for m in messages],
        }
        if self.temperature is not None:
            request["temperature"] = self.temperature
        if self.max_tokens is not None:
            request["max_tokens"] = self.max_tokens
        completions = self.client.chat.completions
        create = completions.create
        try:
            if _is_async(completions, create):
                response = create(**request)
            else:  # a sync client blocks: keep it off the event loop
                response = await asyncio.to_thread(create, **request)
            if inspect.isawaitable(response):
                response = await response
        except Exception as exc:
            raise ModelError(f"{self.name}: the chat completion request failed: {exc}") from exc
        return _completion(response, self.model, self.provider)


def _is_async(completions: Any, create: Any) -> bool:
    return inspect.iscoroutinefunction(create) or type(completions).__name__.startswith("Async")


def _completion(response: Any, model: str, provider: str) -> Completion:
    try:
        text = response.choices[0].message.content or ""
    except (AttributeError, IndexError, TypeError):
        raise ModelError(
            f"{provider}:{model}: the response has no message: {response!r:.200}") from None
    usage = getattr(response, "usage", None)
    counted = None
    if usage is not None:
        counted = Usage(int(getattr(usage, "prompt_tokens", 0) or 0),
                        int(getattr(usage, "completion_tokens", 0) or 0))
    return Completion(text, f"{provider}:{getattr(response, 'model', None) or model}", counted)
