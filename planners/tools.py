"""Tools a plan may call: plain typed Python callables or LangChain tools, described for the
model (name, description, JSON schema of the arguments) and marked when they need approval."""

from __future__ import annotations

import inspect
import keyword
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Union, overload

JSONSchema = dict[str, Any]


@dataclass(frozen=True)
class Tool:
    """A capability granted to plans: ``tools.<name>(...)`` inside a step."""

    name: str
    fn: Callable[..., Any]
    description: str = ""
    parameters: JSONSchema = field(default_factory=lambda: {"type": "object", "properties": {}})
    returns: JSONSchema | None = None
    needs_approval: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.isidentifier() or keyword.iskeyword(
                self.name) or self.name.startswith("_"):
            raise ValueError(
                f"tool name {self.name!r} must be a Python identifier not starting with '_' "
                "(plans call it as tools.<name>); pass name=... to rename it"
            )
        if not callable(self.fn):
            raise TypeError(f"tool {self.name!r}: fn must be callable")

    def signature(self) -> str:
        """``name(arg: type, ...) -> type``, as the model sees it."""
        properties = self.parameters.get("properties", {})
        required = set(self.parameters.get("required", []))
        args = []
        for arg, schema in properties.items():
            text = f"{arg}: {_type_name(schema)}"
            args.append(text if arg in required else f"{text} = ...")
        result = f" -> {_type_name(self.returns)}" if self.returns else ""
        return f"{self.name}({', '.join(args)}){result}"


@overload
def tool(fn: Callable[..., Any], /) -> Tool: ...
@overload
def tool(*, name: str | None = None, description: str | None = None,
         needs_approval: bool = False) -> Callable[[Callable[..., Any]], Tool]: ...


def tool(fn: Callable[..., Any] | None = None, /, *, name: str | None = None,
         description: str | None = None,
         needs_approval: bool = False) -> Tool | Callable[[Callable[..., Any]], Tool]:
    """Make a tool of a typed function: ``@tool`` or ``@tool(needs_approval=True)``."""

    def make(f: Callable[..., Any]) -> Tool:
        return from_callable(f, name=name, description=description,
                             needs_approval=needs_approval)

    return make(fn) if fn is not None else make


def from_callable(fn: Callable[..., Any], *, name: str | None = None,
                  description: str | None = None, needs_approval: bool = False) -> Tool:
    """A tool from a plain callable: its docstring describes it, its type hints give the
    argument schema."""
    signature = inspect.signature(fn)
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # unresolvable annotations: describe the arguments without types
        hints = {}
    properties: dict[str, JSONSchema] = {}
    required: list[str] = []
    for param in signature.parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        properties[param.name] = schema_of(hints.get(param.name, Any))
        if param.default is param.empty:
            required.append(param.name)
    returns = hints.get("return")
    tool_name = name or getattr(fn, "__name__", None) or type(fn).__name__
    return Tool(
        name=tool_name, fn=fn,
        description=description or inspect.getdoc(fn) or "",
        parameters={"type": "object", "properties": properties, "required": required},
        returns=schema_of(returns) if returns is not None else None,
        needs_approval=needs_approval,
    )


def from_langchain(base_tool: Any, *, needs_approval: bool = False) -> Tool:
    """A tool from a LangChain ``BaseTool`` (``@tool`` functions included)."""
    schema = base_tool.tool_call_schema
    parameters = schema.model_json_schema() if hasattr(schema, "model_json_schema") else dict(
        schema)
    parameters = {k: v for k, v in parameters.items() if k not in ("title", "description")}
    names = list(parameters.get("properties", {}))

    async def call(*args: Any, **kwargs: Any) -> Any:
        if len(args) > len(names):
            raise TypeError(f"{base_tool.name}() takes {len(names)} arguments, "
                            f"{len(args)} given")
        return await base_tool.ainvoke({**dict(zip(names, args, strict=False)), **kwargs})

    return Tool(name=_identifier(base_tool.name), fn=call, description=base_tool.description,
                parameters=parameters, needs_approval=needs_approval)


def to_tools(tools: Iterable[Any] | Mapping[str, Any] | None,
             needs_approval: Iterable[str] = ()) -> dict[str, Tool]:
    """Normalise what a user passes as tools: a list of Tool / callables / LangChain tools, or
    a mapping name -> one of those. ``needs_approval`` names more tools that need approval."""
    gated = set(needs_approval)
    items: list[tuple[str | None, Any]]
    if tools is None:
        items = []
    elif isinstance(tools, Mapping):
        items = list(tools.items())
    else:
        items = [(None, t) for t in tools]
    result: dict[str, Tool] = {}
    for name, item in items:
        made = _one(item)
        if name is not None and name != made.name:
            made = replace(made, name=name)
        if made.name in gated:
            made = replace(made, needs_approval=True)
        if made.name in result:
            raise ValueError(f"two tools are named {made.name!r}; rename one with name=...")
        result[made.name] = made
    unknown = gated - set(result)
    if unknown:
        raise ValueError(f"needs_approval names tools that were not given: {sorted(unknown)}")
    return result


def _one(item: Any) -> Tool:
    if isinstance(item, Tool):
        return item
    if _is_langchain_tool(item):
        return from_langchain(item)
    if callable(item):
        return from_callable(item)
    raise TypeError(f"cannot use {type(item).__name__} as a tool: pass a function, a "
                    "LangChain tool or planners.Tool")


def _is_langchain_tool(obj: Any) -> bool:
    try:
        from langchain_core.tools import BaseTool
    except ImportError:
        return False
    return isinstance(obj, BaseTool)


def _identifier(name: str) -> str:
    cleaned = "".join(c if c.isalnum() or c == "_" else "_" for c in name).lstrip("_")
    return cleaned if cleaned and not cleaned[0].isdigit() else f"tool_{cleaned}"


_SCALARS: dict[Any, str] = {str: "string", int: "integer", float: "number", bool: "boolean",
                            type(None): "null"}


def schema_of(hint: Any) -> JSONSchema:
    """A JSON schema for a type hint; Any (or what it cannot describe) is ``{}``."""
    if hint in _SCALARS:
        return {"type": _SCALARS[hint]}
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (Union, types.UnionType):
        return {"anyOf": [schema_of(a) for a in args]}
    if origin is typing.Literal:
        return {"enum": list(args)}
    if hint in (list, tuple, set) or origin in (list, tuple, set, frozenset):
        item = schema_of(args[0]) if args and args[0] is not Ellipsis else {}
        return {"type": "array", "items": item} if item else {"type": "array"}
    if hint is dict or origin is dict:
        value = schema_of(args[1]) if len(args) == 2 else {}
        return {"type": "object", "additionalProperties": value} if value else {"type": "object"}
    model_schema = getattr(hint, "model_json_schema", None)
    if callable(model_schema):
        schema: JSONSchema = model_schema()
        return schema
    return {}


def _type_name(schema: JSONSchema | None) -> str:
    if not schema:
        return "Any"
    if "anyOf" in schema:
        return " | ".join(_type_name(s) for s in schema["anyOf"])
    if "enum" in schema:
        return "Literal[" + ", ".join(repr(v) for v in schema["enum"]) + "]"
    kind = schema.get("type")
    names = {"string": "str", "integer": "int", "number": "float", "boolean": "bool",
             "null": "None"}
    if kind in names:
        return names[kind]
    if kind == "array":
        return f"list[{_type_name(schema.get('items'))}]"
    if kind == "object":
        if "properties" in schema:
            return str(schema.get("title", "dict"))
        return f"dict[str, {_type_name(schema.get('additionalProperties'))}]"
    return "Any"
