"""The objects a plan sees in the sandbox process: its event, its ``step`` (each call a
message to the host) and the decisions and events the host sends back."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from ._child_channel import Channel, error_from, error_info
from ._child_scheduler import Gather, Park, Request, Scheduler, Tagged
from ._json import dumps
from .fingerprint import inputs_fingerprint

# True only while the runtime itself reads a step body's code (never while plan code runs):
# the audit hook then lets attribute reads such as fn.__code__ through.
_READING_CODE = [False]


def _fingerprint(fn: Callable[..., Any]) -> str | None:
    _READING_CODE[0] = True
    try:
        return inputs_fingerprint(fn)
    finally:
        _READING_CODE[0] = False


# -- the objects a plan sees -----------------------------------------------------------------
class Event:
    __slots__ = ("instance_id", "payload", "timestamp", "workflow_name")

    def __init__(self, data: dict[str, Any]) -> None:
        self.payload = data.get("payload")
        self.timestamp = datetime.fromisoformat(data["timestamp"]) if data.get(
            "timestamp") else None
        self.instance_id = data.get("instance_id")
        self.workflow_name = data.get("workflow_name")


class StepProxy:
    """The plan's ``step``: each call is a message to the host, which runs the real step."""

    __slots__ = ("_scheduler",)

    def __init__(self, scheduler: Scheduler) -> None:
        self._scheduler = scheduler

    async def do(self, name: Any, fn: Callable[[], Any], *, retries: Any = None,
                 timeout: Any = None) -> Any:
        scheduler = self._scheduler
        count = scheduler.count(name)
        body = scheduler.new_call()
        scheduler.bodies[body] = fn
        if count is not None:
            scheduler.body_steps[body] = (name, count)
        message: dict[str, Any] = {"op": "step", "method": "do", "name": name, "body": body}
        if retries is not None:  # absent means the default: less to encode on every step
            message["retries"] = retries
        if timeout is not None:
            message["timeout"] = timeout
        if count is not None:  # the host answers this step's tool calls if it abandons it
            message["count"] = count
        if scheduler.fingerprints:
            message["inputs"] = _fingerprint(fn)
        try:
            # A step with a timeout is not run ahead: the host runs its body, under the
            # deadline, from the first attempt on.
            if (scheduler.journaled is None or count is None or timeout is not None
                    or (name, count) in scheduler.journaled):
                return await Request(message)
            return await self._speculate(message, fn, body)
        finally:
            scheduler.bodies.pop(body, None)
            scheduler.body_steps.pop(body, None)

    async def _speculate(self, message: dict[str, Any], fn: Callable[[], Any],
                         body: int) -> Any:
        """Run a new step's body at once and send the step with the body's outcome in one
        message (the host journals it without asking for the body)."""
        scheduler = self._scheduler
        message["call"] = scheduler.new_call()
        message["speculative"] = True
        try:  # the step's own arguments are checked before its body runs
            announced = scheduler.channel.encode(message)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"step arguments must be plain data: {exc}") from None
        step = scheduler.body_steps.get(body)
        try:
            previous, scheduler.active_step = scheduler.active_step, step
            try:  # (a context manager here costs a tenth of the step)
                result = fn()
            finally:
                scheduler.active_step = previous
            if hasattr(result, "__await__"):
                result = await Tagged(result, step, scheduler)
            outcome: dict[str, Any] = {"value": result}
        except Exception as exc:
            outcome = {"error": error_info(exc)}
        try:
            encoded = dumps(outcome)
        except (TypeError, ValueError) as exc:  # a live object: only data crosses
            encoded = dumps({"error": {"name": "TypeError", "message": str(exc)}})
        # The announced step is a JSON object: the outcome goes in as its last field.
        scheduler.channel.send_text(f'{announced[:-1]},"outcome":{encoded}}}')
        return await Park(message["call"])

    async def sleep(self, name: Any, duration: Any) -> Any:
        self._scheduler.count(name)
        return await Request({"op": "step", "method": "sleep", "name": name,
                              "duration": duration})

    async def sleep_until(self, name: Any, when: Any) -> Any:
        self._scheduler.count(name)
        if isinstance(when, datetime):
            when = when.timestamp()
        return await Request({"op": "step", "method": "sleep_until", "name": name,
                              "when": when})

    async def wait_for_event(self, name: Any, *, type: Any,
                             timeout: Any = "24 hours") -> Any:
        self._scheduler.count(name)
        reply = await Request({"op": "step", "method": "wait_for_event", "name": name,
                               "type": type, "timeout": timeout})
        return StepEventView(reply)

    async def wait_for_approval(self, name: Any, *, prompt: Any, data: Any = None,
                                timeout: Any = "24 hours", on_timeout: Any = "reject") -> Any:
        self._scheduler.count(name)
        reply = await Request({"op": "step", "method": "wait_for_approval", "name": name,
                               "prompt": prompt, "data": data, "timeout": timeout,
                               "on_timeout": on_timeout})
        return DecisionView(reply)

    async def all(self, *awaitables: Any) -> Any:
        return await Gather(awaitables)


class StepEventView:
    __slots__ = ("payload", "timestamp", "type")

    def __init__(self, data: dict[str, Any]) -> None:
        self.type = data.get("type")
        self.payload = data.get("payload")
        self.timestamp = datetime.fromisoformat(data["timestamp"])


class DecisionView:
    """A person's decision on an approval gate, as a plan sees it."""

    __slots__ = ("approved", "at", "by", "comment", "data", "edited", "reason", "version")

    def __init__(self, data: dict[str, Any]) -> None:
        self.approved = data.get("approved") is True
        self.reason = data.get("reason")
        self.by = data.get("by")
        self.comment = data.get("comment")
        self.data = data.get("data")
        self.version = data.get("version")
        self.edited = data.get("edited") is True
        self.at = datetime.fromisoformat(data["at"]) if data.get("at") else None


def tool_caller(channel: Channel, scheduler: Scheduler) -> Callable[..., Any]:
    def call_tool(name: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
        call_id = scheduler.new_call()
        step = scheduler.active_step
        reply = channel.call(
            {"op": "tool", "call": call_id, "name": name, "args": args, "kwargs": kwargs,
             "step": list(step) if step is not None else None},
            call_id,
        )
        if "error" in reply:
            raise error_from(reply["error"])
        return reply.get("value")

    return call_tool
