"""Tools: schemas from type hints, descriptions, approval marks, LangChain tools, names."""

import dataclasses
from typing import Any, Literal, Optional

import pydantic
import pytest
from langchain_core.tools import BaseTool, StructuredTool
from langchain_core.tools import tool as lc_tool

from planners import Tool, from_callable, from_langchain, to_tools, tool
from planners.tools import schema_of


def search(query: str, limit: int = 10, score: float = 0.5, exact: bool = False,
           tags: list[str] | None = None, options: dict = None,  # type: ignore[assignment]  # noqa: RUF013
           mode: Literal["fast", "deep"] = "fast", region: Optional[str] = None,  # noqa: UP045
           ) -> list[dict[str, Any]]:
    """Search the index.

    Returns the best matches first."""
    return []


# -- schemas from type hints -----------------------------------------------------------------
def test_schema_from_type_hints() -> None:
    made = from_callable(search)
    assert made.name == "search"
    assert made.description == "Search the index.\n\nReturns the best matches first."
    assert made.needs_approval is False
    assert made.parameters == {
        "type": "object",
        "properties": {
            "query": {"type": "string"},
            "limit": {"type": "integer"},
            "score": {"type": "number"},
            "exact": {"type": "boolean"},
            "tags": {"anyOf": [{"type": "array", "items": {"type": "string"}},
                               {"type": "null"}]},
            "options": {"type": "object"},
            "mode": {"enum": ["fast", "deep"]},
            "region": {"anyOf": [{"type": "string"}, {"type": "null"}]},
        },
        "required": ["query"],
    }
    assert made.returns == {"type": "array", "items": {"type": "object"}}
    assert made.signature() == (
        "search(query: str, limit: int = ..., score: float = ..., exact: bool = ..., "
        "tags: list[str] | None = ..., options: dict[str, Any] = ..., "
        "mode: Literal['fast', 'deep'] = ..., region: str | None = ...) "
        "-> list[dict[str, Any]]"
    )


@pytest.mark.parametrize(("hint", "schema"), [
    (int, {"type": "integer"}),
    (bool, {"type": "boolean"}),
    (str, {"type": "string"}),
    (float, {"type": "number"}),
    (type(None), {"type": "null"}),
    (list[int], {"type": "array", "items": {"type": "integer"}}),
    (list, {"type": "array"}),
    (tuple[str, ...], {"type": "array", "items": {"type": "string"}}),
    (set[float], {"type": "array", "items": {"type": "number"}}),
    (dict[str, int], {"type": "object", "additionalProperties": {"type": "integer"}}),
    (dict, {"type": "object"}),
    (Optional[int],  # noqa: UP045
     {"anyOf": [{"type": "integer"}, {"type": "null"}]}),
    (int | str, {"anyOf": [{"type": "integer"}, {"type": "string"}]}),
    (Literal[1, 2], {"enum": [1, 2]}),
    (Any, {}),
    (object, {}),
])
def test_schema_of(hint: Any, schema: dict) -> None:
    assert schema_of(hint) == schema


def test_pydantic_argument_schema() -> None:
    class Release(pydantic.BaseModel):
        version: str
        notes: str = ""

    def publish(release: Release) -> None:
        """Publish a release."""

    made = from_callable(publish)
    prop = made.parameters["properties"]["release"]
    assert prop["title"] == "Release"
    assert set(prop["properties"]) == {"version", "notes"}
    assert made.parameters["required"] == ["release"]
    assert "publish(release: Release)" in made.signature()


def test_untyped_and_variadic_arguments() -> None:
    def loose(a, b=1, *args, **kwargs):  # type: ignore[no-untyped-def]
        return a

    made = from_callable(loose)
    assert made.parameters == {"type": "object", "properties": {"a": {}, "b": {}},
                               "required": ["a"]}
    assert made.description == ""
    assert made.returns is None
    assert made.signature() == "loose(a: Any, b: Any = ...)"


def test_unresolvable_annotations_still_make_a_tool() -> None:
    def odd(x: "NoSuchType") -> "AlsoMissing":  # type: ignore[name-defined]  # noqa: F821
        """Odd."""

    made = from_callable(odd)
    assert made.parameters["properties"] == {"x": {}}
    assert made.parameters["required"] == ["x"]


# -- the decorator ---------------------------------------------------------------------------
def test_tool_decorator_forms() -> None:
    @tool
    def plain(x: int) -> int:
        """Double x."""
        return 2 * x

    @tool(name="ship_it", description="Ship to production.", needs_approval=True)
    def ship(target: str) -> str:
        """Ignored docstring."""
        return target

    assert isinstance(plain, Tool) and plain.name == "plain"
    assert plain.fn(4) == 8
    assert plain.description == "Double x."
    assert ship.name == "ship_it"
    assert ship.description == "Ship to production."
    assert ship.needs_approval is True
    assert to_tools([plain, ship])["ship_it"].needs_approval


def test_needs_approval_through_to_tools() -> None:
    def deploy(path: str) -> str:
        """Deploy."""
        return path

    def status() -> str:
        """Status."""
        return "ok"

    made = to_tools([deploy, status], needs_approval=["deploy"])
    assert list(made) == ["deploy", "status"]
    assert made["deploy"].needs_approval and not made["status"].needs_approval
    with pytest.raises(ValueError, match=r"not given: \['rollback'\]"):
        to_tools([deploy, status], needs_approval=["rollback"])


# -- LangChain tools -------------------------------------------------------------------------
@lc_tool
def add(a: int, b: int = 2) -> int:
    """Add two integers."""
    return a + b


@lc_tool("web-search")
def web_search(query: str, top_k: int = 3) -> list[str]:
    """Search the web."""
    return [f"{query}#{i}" for i in range(top_k)]


class Shout(BaseTool):
    name: str = "shout"
    description: str = "Upper-case a text."

    def _run(self, text: str) -> str:
        return text.upper()


async def test_langchain_tool_is_converted() -> None:
    made = to_tools([add])["add"]
    assert made.name == "add"
    assert made.description == "Add two integers."
    assert made.parameters["type"] == "object"
    assert made.parameters["properties"]["a"]["type"] == "integer"
    assert made.parameters["properties"]["b"]["type"] == "integer"
    assert made.parameters["required"] == ["a"]
    assert "title" not in made.parameters
    assert made.signature().startswith("add(a: int, b: int = ...)")
    # positional, keyword and mixed calls all reach the LangChain tool
    assert await made.fn(1, 5) == 6
    assert await made.fn(a=1) == 3
    assert await made.fn(1, b=4) == 5
    assert await made.fn(b=10, a=1) == 11
    with pytest.raises(TypeError, match="takes 2 arguments, 3 given"):
        await made.fn(1, 2, 3)


async def test_langchain_tool_names_become_identifiers() -> None:
    made = from_langchain(web_search, needs_approval=True)
    assert made.name == "web_search"
    assert made.needs_approval
    assert await made.fn("cats", top_k=2) == ["cats#0", "cats#1"]
    via_list = to_tools([web_search], needs_approval=["web_search"])
    assert via_list["web_search"].needs_approval


async def test_langchain_base_tool_subclass_and_structured_tool() -> None:
    def _mul(x: int, y: int) -> int:
        return x * y

    mul = StructuredTool.from_function(_mul, name="mul", description="Multiply.")
    made = to_tools([Shout(), mul])
    assert set(made) == {"shout", "mul"}
    assert made["shout"].description == "Upper-case a text."
    assert list(made["shout"].parameters["properties"]) == ["text"]
    assert await made["shout"].fn("hey") == "HEY"
    assert await made["mul"].fn(6, 7) == 42


# -- names -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["", "1st", "with space", "class", "_private", "a-b", None])
def test_invalid_tool_names(name: Any) -> None:
    with pytest.raises(ValueError, match="Python identifier"):
        Tool(name=name, fn=len)


def test_lambda_needs_a_name() -> None:
    with pytest.raises(ValueError, match="pass name="):
        from_callable(lambda x: x)
    assert from_callable(lambda x: x, name="identity").name == "identity"


def test_tool_fn_must_be_callable() -> None:
    with pytest.raises(TypeError, match="callable"):
        Tool(name="x", fn=42)  # type: ignore[arg-type]


def test_name_collisions() -> None:
    def fetch(url: str) -> str:
        """Fetch."""
        return url

    other = from_callable(lambda url: url, name="fetch")
    with pytest.raises(ValueError, match="two tools are named 'fetch'"):
        to_tools([fetch, other])
    with pytest.raises(ValueError, match="two tools are named 'add'"):
        to_tools([add, tool(name="add")(fetch)])


def test_to_tools_from_a_mapping_renames() -> None:
    def fetch(url: str) -> str:
        """Fetch a page."""
        return url

    made = to_tools({"get_page": fetch, "plus": add}, needs_approval=["get_page"])
    assert list(made) == ["get_page", "plus"]
    assert made["get_page"].name == "get_page"
    assert made["get_page"].fn is fetch
    assert made["get_page"].description == "Fetch a page."
    assert made["get_page"].needs_approval
    assert made["plus"].name == "plus"
    with pytest.raises(ValueError, match="Python identifier"):
        to_tools({"get page": fetch})


def test_to_tools_edge_cases() -> None:
    assert to_tools(None) == {}
    assert to_tools([]) == {}
    with pytest.raises(TypeError, match="cannot use int as a tool"):
        to_tools([42])
    made = from_callable(len, name="size")
    assert to_tools([made])["size"] is made
    assert dataclasses.is_dataclass(made)
