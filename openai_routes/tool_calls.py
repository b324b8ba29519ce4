"""Structured outputs and tool calls: the constrained decoding a chat request needs, and its output read back.

The server enforces formats with the engine's constrained decoding instead of hoping the model complies:

- ``response_format`` ``json_object`` / ``json_schema``: the output is one JSON value of that schema.
- ``tool_choice`` named: the output is that tool's arguments (its parameters schema).
- ``tool_choice: "required"``: the output is a JSON array of ``{"name", "parameters"}`` over the tools
  (one item at most when ``parallel_tool_calls`` is false).
- ``tool_choice: "auto"`` (OpenAI's default with tools): the model answers freely and its output is parsed by
  the tool-call parser configured for the model (``tool_call_parser``). Without a parser the model answers
  in text and no tool is called (documented rule; never an error).
- ``tool_choice: "none"``: a plain answer.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any, Literal

from openai_routes.engine import ParsedToolCalls, StructuredOutput
from openai_routes.protocol.chat import ChatCompletionRequest, FunctionCall, ToolCall
from openai_routes.protocol.tools import ChatCompletionTool

Mode = Literal["text", "named", "required", "auto"]


@dataclass(frozen=True)
class OutputPlan:
    mode: Mode
    structured: StructuredOutput | None = None
    tool_name: str | None = None


@dataclass(frozen=True)
class AssistantOutput:
    content: str | None
    tool_calls: list[ToolCall] | None
    finish_reason: Literal["stop", "length", "tool_calls"]


def required_schema(tools: list[ChatCompletionTool], parallel: bool) -> dict[str, Any]:
    calls = [
        {
            "type": "object",
            "properties": {
                "name": {"type": "string", "enum": [tool.function.name]},
                "parameters": tool.function.parameters_schema,
            },
            "required": ["name", "parameters"],
            "additionalProperties": False,
        }
        for tool in tools
    ]
    schema: dict[str, Any] = {"type": "array", "minItems": 1, "items": {"anyOf": calls}}
    if not parallel:
        schema["maxItems"] = 1
    return schema


def response_format_output(request: ChatCompletionRequest) -> StructuredOutput | None:
    response_format = request.response_format
    if response_format is None or response_format.type == "text":
        return None
    if response_format.type == "json_object":
        return StructuredOutput(json_object=True)
    assert response_format.json_schema is not None  # checked by the protocol
    return StructuredOutput(json_schema=response_format.json_schema.schema_)


def plan_output(request: ChatCompletionRequest, has_tool_parser: bool) -> OutputPlan:
    mode = request.tool_mode
    tools = request.tools or []
    if mode == "named":
        name = request.tool_choice.function.name  # type: ignore[union-attr]
        tool = next(tool for tool in tools if tool.function.name == name)
        return OutputPlan("named", StructuredOutput(json_schema=tool.function.parameters_schema), name)
    if mode == "required":
        return OutputPlan("required", StructuredOutput(json_schema=required_schema(tools, request.parallel_tool_calls)))
    if mode == "auto" and has_tool_parser:
        return OutputPlan("auto", response_format_output(request))
    return OutputPlan("text", response_format_output(request))


def new_call(name: str, arguments: str) -> ToolCall:
    return ToolCall(id=f"call_{uuid.uuid4().hex[:24]}", function=FunctionCall(name=name, arguments=arguments))


def read_output(
    plan: OutputPlan,
    text: str,
    finish_reason: Literal["stop", "length"],
    parse: ParsedToolCalls | None = None,
    parallel: bool = True,
) -> AssistantOutput:
    """A finished choice's text as the assistant message: content, or tool calls with ``tool_calls``."""
    if plan.mode == "text" or finish_reason == "length":  # a cut-off call can't be read: return the text
        return AssistantOutput(text, None, finish_reason)
    try:
        if plan.mode == "named":
            assert plan.tool_name is not None
            calls = [new_call(plan.tool_name, json.dumps(json.loads(text), ensure_ascii=False))]
            content = None
        elif plan.mode == "required":
            items = json.loads(text)
            calls = [new_call(item["name"], json.dumps(item["parameters"], ensure_ascii=False)) for item in items]
            content = None
        else:
            if parse is None or not parse.calls:
                return AssistantOutput(text, None, finish_reason)
            calls = [new_call(name, arguments) for name, arguments in parse.calls]
            content = parse.content or None
    except (ValueError, KeyError, TypeError):
        return AssistantOutput(text, None, finish_reason)
    return AssistantOutput(content, calls if parallel else calls[:1], "tool_calls")
