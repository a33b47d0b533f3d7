"""The planner and the agent over the OpenAI HTTP API: replayed from vcrpy cassettes, and live
against the loopback OpenAI-compatible server.

Re-record the cassettes with ``python -m tests.planners.record_cassettes``.
"""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
import warnings
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml

from planners import LLMPlanner, Message, ModelError, OpenAIChatModel, PlanRequest, to_tools

from .openai_server import OpenAICompatibleServer
from .record_cassettes import (
    CASSETTES,
    GOAL,
    MODEL,
    PARAMS,
    PLAN_IMPORT_OS,
    PLAN_VALID,
    Toolbox,
    agent_replan,
    chat_model,
    plan_once,
    use_cassette,
)

# Replays point the client at loopback port 9 (discard), where nothing listens: a request
# vcrpy did not intercept would fail to connect. The cassettes match on method, path and the
# body's model only (not host or port), so the recorded server's random port is irrelevant.
NOWHERE_PORT = 9
NOWHERE = f"http://127.0.0.1:{NOWHERE_PORT}/v1"


@pytest.fixture(scope="module", autouse=True)
def nothing_listens_on_nowhere() -> None:
    with socket.socket() as sock:
        sock.settimeout(1)
        if sock.connect_ex(("127.0.0.1", NOWHERE_PORT)) == 0:
            pytest.fail(f"something listens on 127.0.0.1:{NOWHERE_PORT}; replays would not "
                        "prove that vcrpy intercepts every request")


def recorded_usage(name: str) -> list[dict[str, int]]:
    """The ``usage`` of every response recorded in a cassette."""
    data = yaml.safe_load((CASSETTES / f"{name}.yaml").read_text())
    return [json.loads(i["response"]["body"]["string"])["usage"] for i in data["interactions"]]


def codes(report: Any) -> set[str]:
    return {d.code for d in report.errors}


# -- replays ------------------------------------------------------------------------------
async def test_replay_valid_first_time() -> None:
    with use_cassette("plan_valid_first", "none") as cassette:
        draft = await plan_once(NOWHERE)
    assert cassette.play_count == len(cassette) == 1
    assert draft.ok, draft.failure
    assert draft.rounds == 1 and draft.repairs == 0
    assert draft.provenance.model == "openai:gpt-4.1-mini"
    assert draft.provenance.verdict == "valid"
    assert 'step.do("run tests"' in draft.source
    [usage] = recorded_usage("plan_valid_first")
    assert usage["prompt_tokens"] > 0
    assert draft.provenance.usage is not None
    assert draft.provenance.usage.input_tokens == usage["prompt_tokens"]
    assert draft.provenance.usage.output_tokens == usage["completion_tokens"]
    assert draft.provenance.usage.total_tokens == usage["total_tokens"]


async def test_replay_two_repairs() -> None:
    with use_cassette("plan_two_repairs", "none") as cassette:
        draft = await plan_once(NOWHERE)
    assert cassette.play_count == len(cassette) == 3  # each exchange once, in order
    assert draft.ok, draft.failure
    assert draft.rounds == 3 and draft.repairs == 2
    first, second, third = draft.attempts
    assert "import-not-allowed" in codes(first.report)
    assert "tool-outside-step" in codes(second.report)
    assert third.ok
    usages = recorded_usage("plan_two_repairs")
    assert draft.provenance.usage is not None
    assert draft.provenance.usage.input_tokens == sum(u["prompt_tokens"] for u in usages)
    assert draft.provenance.usage.output_tokens == sum(u["completion_tokens"] for u in usages)


async def test_replay_agent_replan(tmp_path: Path) -> None:
    toolbox = Toolbox()
    with use_cassette("agent_replan", "none") as cassette:
        result = await agent_replan(NOWHERE, f"sqlite:///{tmp_path / 'a.db'}", toolbox)
    assert cassette.play_count == len(cassette) == 2
    assert result.status.value == "complete", result.error
    assert result.revisions == 1
    assert result.reused_steps >= 1
    assert result.attempts[0].status.value == "errored"
    assert "unknown test runner flag" in result.attempts[0].error.message
    assert result.output == {"path": "/work/1.0", "tests": {"passed": 12, "failed": 0}}
    assert toolbox.count("checkout") == 1  # the reused step's tool ran once
    assert toolbox.calls[1:] == [("run_tests", "/work/1.0", "--fast"),
                                 ("run_tests", "/work/1.0", "-x")]
    revision = result.attempts[1].provenance
    assert revision is not None and revision.model == "openai:gpt-4.1-mini"
    assert revision.revision_of is not None


async def test_replay_ignores_prompt_wording() -> None:
    planner = LLMPlanner(chat_model(NOWHERE), instructions="Prefer short step names.")
    with use_cassette("plan_valid_first", "none"):
        draft = await planner.plan(PlanRequest(GOAL, to_tools(Toolbox().tools()), PARAMS))
    assert draft.ok and draft.rounds == 1


async def test_replay_refuses_another_model() -> None:
    model = chat_model(NOWHERE)
    model.model = "gpt-4o"
    refused = "openai:gpt-4o: the chat completion request failed"
    with use_cassette("plan_valid_first", "none"), pytest.raises(ModelError, match=refused):
        await model.complete([Message("user", "hi")])


# -- live, against the loopback server ------------------------------------------------------
async def test_live_planner_over_http() -> None:
    with OpenAICompatibleServer([PLAN_IMPORT_OS, PLAN_VALID]) as server:
        draft = await plan_once(server.base_url)
    assert draft.ok and draft.rounds == 2
    first, repair = server.requests
    assert first["model"] == MODEL and first["temperature"] == 0
    system, user = first["messages"]
    assert system["role"] == "system"
    assert "tools.checkout(version: str)" in system["content"]
    assert "tools.run_tests(path: str" in system["content"]
    assert user == {"role": "user", "content": user["content"]}
    assert "Goal: " + GOAL in user["content"]
    assert [m["role"] for m in repair["messages"]] == ["system", "user", "assistant", "user"]
    assert repair["messages"][2]["content"] == PLAN_IMPORT_OS
    feedback = repair["messages"][3]["content"]
    assert "The validator rejected the plan" in feedback
    assert "[import-not-allowed]" in feedback and "'os'" in feedback
    # usage counts whitespace words
    words = sum(len(m["content"].split()) for m in first["messages"])
    assert draft.provenance.usage is not None
    assert draft.provenance.usage.input_tokens == words + sum(
        len(m["content"].split()) for m in repair["messages"])


async def test_live_callable_script_and_models() -> None:
    seen: list[str] = []

    def answer(request: dict[str, Any]) -> str:
        seen.append(request["messages"][-1]["content"])
        return f"echo {len(seen)}"

    with OpenAICompatibleServer(answer, models=["gpt-4.1-mini", "local"]) as server:
        client = openai.AsyncOpenAI(base_url=server.base_url, api_key="x", max_retries=0)
        model = OpenAIChatModel("local", client=client)
        completion = await model.complete([Message("user", "one two three")])
        listed = [m.id async for m in client.models.list()]
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(server.base_url + "/nope", timeout=5)
        await client.close()
    assert completion.text == "echo 1" and completion.model == "openai:local"
    assert completion.usage is not None
    assert (completion.usage.input_tokens, completion.usage.output_tokens) == (3, 2)
    assert listed == ["gpt-4.1-mini", "local"]
    assert missing.value.code == 404
    assert "unknown path" in json.loads(missing.value.read())["error"]["message"]
    assert seen == ["one two three"]


async def test_http_error_is_a_model_error() -> None:
    with OpenAICompatibleServer([]) as server:  # exhausted from the start: 500
        client = openai.AsyncOpenAI(base_url=server.base_url, api_key="x", max_retries=0)
        model = OpenAIChatModel(MODEL, client=client)
        with pytest.raises(ModelError) as failed:
            await model.complete([Message("user", "hi")])
        await client.close()
    message = str(failed.value)
    assert message.startswith("openai:gpt-4.1-mini: the chat completion request failed")
    assert "500" in message and "script is exhausted" in message
    assert isinstance(failed.value.__cause__, openai.InternalServerError)
    assert len(server.requests) == 1  # max_retries=0: no retry


async def test_plain_async_client_is_awaited() -> None:
    # regression: openai 3.x AsyncCompletions.create is a sync wrapper returning a coroutine
    with OpenAICompatibleServer(["hello"]) as server:
        model = OpenAIChatModel(MODEL, base_url=server.base_url, api_key="x")
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)  # "coroutine ... never awaited"
            completion = await model.complete([Message("user", "hi")])
    assert completion.text == "hello"
