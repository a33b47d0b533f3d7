"""A chat model that answers from a script: tests and offline demos, no network."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from ..errors import ModelError
from .base import Completion, Message, Usage

Reply = str | Callable[[Sequence[Message]], str]


class ScriptedChatModel:
    """Answers with ``replies`` in order; a reply may be a function of the conversation.

    Every conversation it was given is kept in ``calls`` so tests can check what the planner
    asked. Usage counts whitespace-separated words, so token accounting can be tested too.
    Running out of replies is a :class:`ModelError` (the script is shorter than the test)."""

    def __init__(self, replies: Iterable[Reply], *, name: str = "scripted") -> None:
        self._replies = list(replies)
        self._name = name
        self.calls: list[list[Message]] = []

    @property
    def name(self) -> str:
        return self._name

    @property
    def remaining(self) -> int:
        return len(self._replies) - len(self.calls)

    async def complete(self, messages: Sequence[Message]) -> Completion:
        index = len(self.calls)
        self.calls.append(list(messages))
        if index >= len(self._replies):
            raise ModelError(
                f"the scripted model has only {len(self._replies)} replies and was asked for "
                f"reply {index + 1}; add replies to the script"
            )
        reply = self._replies[index]
        text = reply(messages) if callable(reply) else reply
        words = sum(len(m.content.split()) for m in messages)
        return Completion(text, self._name, Usage(words, len(text.split())))
