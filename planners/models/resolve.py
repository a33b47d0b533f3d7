"""Choosing the model from configuration: an object, or a string such as
``openai:gpt-4.1-mini`` or ``ollama:llama3.1``."""

from __future__ import annotations

import os
from typing import Any

from .base import ChatModel
from .langchain_chat import LangChainChatModel
from .openai_chat import OpenAIChatModel

# OpenAI-compatible servers people run locally, by their usual address.
LOCAL_SERVERS = {
    "ollama": "http://localhost:11434/v1",
    "vllm": "http://localhost:8000/v1",
    "lmstudio": "http://localhost:1234/v1",
}
ENV_MODEL = "AGENTFLOW_MODEL"


def load_model(spec: Any = None, *, model: str | None = None, base_url: str | None = None,
               api_key: str | None = None) -> ChatModel:
    """A :class:`ChatModel` from ``spec``:

    - a ``ChatModel`` (returned as is), a langchain-core ``BaseChatModel``, or an ``openai``
      client (``OpenAI`` or ``AsyncOpenAI``, with ``model=`` naming the model);
    - ``"openai:MODEL"``: OpenAI, or any compatible server with ``base_url`` (or the
      ``OPENAI_BASE_URL`` environment variable);
    - ``"ollama:MODEL"``, ``"vllm:MODEL"``, ``"lmstudio:MODEL"``: that local server at its
      usual address unless ``base_url`` says otherwise;
    - None: the ``AGENTFLOW_MODEL`` environment variable.
    """
    if spec is None:
        spec = os.environ.get(ENV_MODEL)
        if not spec:
            raise ValueError(
                f"no model configured: pass one (e.g. 'openai:gpt-4.1-mini') or set {ENV_MODEL}"
            )
    if isinstance(spec, str):
        return _from_string(spec, base_url, api_key)
    if _is_langchain(spec):
        return LangChainChatModel(spec)
    if isinstance(spec, ChatModel):
        return spec
    if callable(getattr(getattr(getattr(spec, "chat", None), "completions", None), "create",
                        None)):
        if not model:
            raise ValueError("an openai client needs the model name: load_model(client, "
                             "model='gpt-4.1-mini')")
        return OpenAIChatModel(model, client=spec)
    raise TypeError(
        f"cannot use {type(spec).__name__} as a chat model: pass a model string such as "
        "'openai:gpt-4.1-mini', a langchain-core chat model, or an object with "
        "name and async complete(messages)"
    )


def _from_string(spec: str, base_url: str | None, api_key: str | None) -> ChatModel:
    provider, sep, model = spec.partition(":")
    if not sep or not model:
        raise ValueError(
            f"model string {spec!r} must look like 'PROVIDER:MODEL', e.g. 'openai:gpt-4.1-mini'"
            f" or 'ollama:llama3.1'; providers: openai, {', '.join(LOCAL_SERVERS)}"
        )
    if provider == "openai":
        return OpenAIChatModel(model, base_url=base_url, api_key=api_key)
    if provider in LOCAL_SERVERS:
        return OpenAIChatModel(model, base_url=base_url or LOCAL_SERVERS[provider],
                               api_key=api_key or provider,  # local servers ignore the key
                               provider=provider)
    raise ValueError(
        f"unknown model provider {provider!r} in {spec!r}; use openai, "
        f"{', '.join(LOCAL_SERVERS)}, or pass a langchain-core chat model"
    )


def _is_langchain(obj: Any) -> bool:
    try:
        from langchain_core.language_models import BaseChatModel
    except ImportError:
        return False
    return isinstance(obj, BaseChatModel)
