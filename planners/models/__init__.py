"""Chat models for planners: a small protocol and adapters for OpenAI-compatible APIs,
langchain-core and scripted replies."""

from .base import ChatModel, Completion, Message, Usage
from .langchain_chat import LangChainChatModel
from .openai_chat import OpenAIChatModel
from .resolve import LOCAL_SERVERS, load_model
from .scripted import ScriptedChatModel

__all__ = [
    "LOCAL_SERVERS",
    "ChatModel",
    "Completion",
    "LangChainChatModel",
    "Message",
    "OpenAIChatModel",
    "ScriptedChatModel",
    "Usage",
    "load_model",
]
