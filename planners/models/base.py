"""What the planner needs of a chat model: messages in, text and token usage out."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True, slots=True)
class Message:
    role: Role
    content: str


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts as the provider reports them."""

    input_tokens: int = 0
    output_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(self.input_tokens + other.input_tokens,
                     self.output_tokens + other.output_tokens)


@dataclass(frozen=True, slots=True)
class Completion:
    """One answer of the model. ``usage`` is None when the provider reports none."""

    text: str
    model: str
    usage: Usage | None = None


@runtime_checkable
class ChatModel(Protocol):
    """A chat model the planner can talk to. ``name`` is recorded in every plan's provenance."""

    @property
    def name(self) -> str: ...

    async def complete(self, messages: Sequence[Message]) -> Completion: ...
