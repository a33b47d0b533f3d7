"""Choosing and wrapping chat models: strings, environment, OpenAI clients, langchain-core
models and the scripted model. Nothing here reaches the network."""

from __future__ import annotations

import openai
import pytest
from langchain_core.language_models.fake_chat_models import (
    FakeListChatModel,
    GenericFakeChatModel,
)
from langchain_core.messages import AIMessage

from planners import (
    ChatModel,
    LangChainChatModel,
    LLMPlanner,
    Message,
    ModelError,
    OpenAIChatModel,
    PlanRequest,
    ScriptedChatModel,
    Usage,
    load_model,
)
from planners.models import LOCAL_SERVERS

PLAN = """```python
async def run(event, step):
    return {"goal": event.payload["goal"]}
```"""


@pytest.fixture(autouse=True)
def _no_openai_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "AGENTFLOW_MODEL"):
        monkeypatch.delenv(name, raising=False)


# -- strings ---------------------------------------------------------------------------------
def test_openai_string_with_base_url_and_key() -> None:
    model = load_model("openai:gpt-4.1-mini", base_url="http://127.0.0.1:9/v1",
                       api_key="sk-test")
    assert isinstance(model, OpenAIChatModel)
    assert isinstance(model, ChatModel)
    assert model.model == "gpt-4.1-mini"
    assert model.name == "openai:gpt-4.1-mini"
    assert isinstance(model.client, openai.AsyncOpenAI)
    assert str(model.client.base_url).rstrip("/") == "http://127.0.0.1:9/v1"
    assert model.client.api_key == "sk-test"


def test_openai_string_reads_the_usual_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/compat/v1")
    model = load_model("openai:gpt-4.1")
    assert isinstance(model, OpenAIChatModel)
    assert model.client.api_key == "sk-env"
    assert str(model.client.base_url).rstrip("/") == "http://127.0.0.1:9/compat/v1"


@pytest.mark.parametrize("provider", sorted(LOCAL_SERVERS))
def test_local_servers_default_base_url(provider: str) -> None:
    model = load_model(f"{provider}:llama3.1")
    assert isinstance(model, OpenAIChatModel)
    assert model.model == "llama3.1"
    assert str(model.client.base_url).rstrip("/") == LOCAL_SERVERS[provider]
    assert model.client.api_key  # local servers ignore it, the client needs one


def test_ollama_address() -> None:
    model = load_model("ollama:llama3.1")
    assert isinstance(model, OpenAIChatModel)
    assert str(model.client.base_url).rstrip("/") == "http://localhost:11434/v1"
    other = load_model("ollama:llama3.1", base_url="http://gpu-box:11434/v1")
    assert isinstance(other, OpenAIChatModel)
    assert str(other.client.base_url).rstrip("/") == "http://gpu-box:11434/v1"


@pytest.mark.parametrize("spec", ["gpt-4.1-mini", "openai:", "anthropic:claude", ":x",
                                  "mistral:large"])
def test_bad_model_strings_name_the_providers(spec: str) -> None:
    with pytest.raises(ValueError) as raised:
        load_model(spec)
    message = str(raised.value)
    for provider in ("openai", "ollama", "vllm", "lmstudio"):
        assert provider in message
    assert repr(spec) in message


def test_model_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTFLOW_MODEL", "vllm:qwen2.5")
    model = load_model()
    assert isinstance(model, OpenAIChatModel)
    assert model.model == "qwen2.5"
    assert str(model.client.base_url).rstrip("/") == "http://localhost:8000/v1"
    planner = LLMPlanner()  # the planner falls back to the environment too
    assert isinstance(planner.model, OpenAIChatModel)
    assert planner.model.model == "qwen2.5"


def test_no_model_configured() -> None:
    with pytest.raises(ValueError, match="AGENTFLOW_MODEL"):
        load_model()
    with pytest.raises(ValueError, match="AGENTFLOW_MODEL"):
        LLMPlanner()


# -- objects ---------------------------------------------------------------------------------
def test_openai_client_needs_the_model_name() -> None:
    client = openai.AsyncOpenAI(base_url="http://127.0.0.1:9/v1", api_key="sk-test")
    with pytest.raises(ValueError, match="model name"):
        load_model(client)
    model = load_model(client, model="gpt-4.1-mini")
    assert isinstance(model, OpenAIChatModel)
    assert model.client is client
    assert model.name == "openai:gpt-4.1-mini"


def test_sync_openai_client_is_accepted() -> None:
    client = openai.OpenAI(base_url="http://127.0.0.1:9/v1", api_key="sk-test")
    model = load_model(client, model="gpt-4o")
    assert isinstance(model, OpenAIChatModel) and model.client is client


def test_chat_model_objects_are_returned_as_is() -> None:
    scripted = ScriptedChatModel([PLAN])
    assert load_model(scripted) is scripted


@pytest.mark.parametrize("spec", [42, object(), ["openai:gpt-4.1"]])
def test_unusable_objects(spec: object) -> None:
    with pytest.raises(TypeError, match="cannot use"):
        load_model(spec)


def test_openai_model_needs_a_name() -> None:
    with pytest.raises(ValueError, match="model name"):
        OpenAIChatModel("", client=object())


# -- langchain-core --------------------------------------------------------------------------
async def test_langchain_model_is_wrapped() -> None:
    lc = FakeListChatModel(responses=[PLAN])
    model = load_model(lc)
    assert isinstance(model, LangChainChatModel)
    assert model.model is lc
    assert model.name == "langchain:fake-list-chat-model"
    completion = await model.complete([Message("system", "be brief"), Message("user", "hi")])
    assert completion.text == PLAN
    assert completion.model == "langchain:fake-list-chat-model"
    assert completion.usage is None  # the fake model reports none


async def test_langchain_usage_and_content_blocks() -> None:
    answer = AIMessage(
        content=[{"type": "text", "text": "```python\n"}, "async def run(event, step):\n",
                 {"type": "text", "text": "    return 1\n```"}],
        usage_metadata={"input_tokens": 12, "output_tokens": 5, "total_tokens": 17},
    )
    model = LangChainChatModel(GenericFakeChatModel(messages=iter([answer])))
    assert model.name == "langchain:generic-fake-chat-model"
    completion = await model.complete([Message("user", "plan")])
    assert completion.text == "```python\nasync def run(event, step):\n    return 1\n```"
    assert completion.usage == Usage(12, 5)


async def test_langchain_model_plans() -> None:
    planner = LLMPlanner(FakeListChatModel(responses=[PLAN]))
    draft = await planner.plan(PlanRequest("say hi"))
    assert draft.ok
    assert draft.provenance.model == "langchain:fake-list-chat-model"
    assert draft.provenance.usage is None


async def test_langchain_failure_is_a_model_error() -> None:
    model = LangChainChatModel(GenericFakeChatModel(messages=iter([])))  # nothing to say
    with pytest.raises(ModelError, match="langchain:generic-fake-chat-model"):
        await model.complete([Message("user", "plan")])


def test_langchain_wrapper_rejects_other_objects() -> None:
    with pytest.raises(TypeError, match="BaseChatModel"):
        LangChainChatModel(ScriptedChatModel([]))


# -- scripted --------------------------------------------------------------------------------
async def test_scripted_model_runs_out() -> None:
    model = ScriptedChatModel(["one", "two words"], name="script-1")
    assert model.name == "script-1" and model.remaining == 2
    first = await model.complete([Message("user", "a b c")])
    assert (first.text, first.model, first.usage) == ("one", "script-1", Usage(3, 1))
    second = await model.complete([Message("user", "x")])
    assert second.usage == Usage(1, 2)
    assert model.remaining == 0
    with pytest.raises(ModelError, match="only 2 replies"):
        await model.complete([Message("user", "again")])
    assert len(model.calls) == 3
    assert model.calls[0] == [Message("user", "a b c")]
