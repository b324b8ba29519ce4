"""Structured outputs and tool calls: the constrained decoding a chat request needs, and its output read back.

The server enforces formats with the engine's constrained decoding instead of hoping the model complies:

- ``response_format`` ``json_object`` / ``json_schema``: the output is one JSON value of that schema.
- ``tool_choice`` named: the output is that tool's arguments (its parameters schema).
- ``tool_choice: "required"``: the output is a JSON array of ``{"name", "parameters"}`` over the tools
  (one item at most when ``parallel_tool_calls`` is false).
- ``tool_choice: "auto"`` (OpenAI's default with tools): the model answers freely, in its native format for the
  tool-call parser configured for it (``tool_call_parser``). A model without one calls in the generic format
  (``tool_format``), held to it by a structural tag.
  With ``response_format`` too, the format wins and the answer is text.
- ``tool_choice: "none"``: a plain answer.

The model's parsers read the output back by the plan's ``tool_choice`` (``pipeline.choice``, ``engine.output_reader``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from openai_routes.core.engine import StructuredOutput
from openai_routes.pipeline import tool_format
from openai_routes.protocol.chat import ChatCompletionRequest
from openai_routes.protocol.tools import ChatCompletionTool

Mode = Literal["text", "named", "required", "auto"]


@dataclass(frozen=True)
class OutputPlan:
    mode: Mode
    structured: StructuredOutput | None = None
    tool_name: str | None = None

    @property
    def tool_choice(self) -> str | dict[str, Any]:
        """The plan as OpenAI's ``tool_choice``, for the model's parsers to read the output by."""
        if self.mode == "named":
            return {"type": "function", "function": {"name": self.tool_name}}
        return "none" if self.mode == "text" else self.mode


def rebased(schema: Any, base: str) -> Any:
    """``schema`` with its local references (``#``, ``#/$defs/...``) pointing under ``base`` instead of its root."""
    if isinstance(schema, dict):
        return {
            key: base + value[1:]
            if key == "$ref" and isinstance(value, str) and value.startswith("#")
            else rebased(value, base)
            for key, value in schema.items()
        }
    if isinstance(schema, list):
        return [rebased(item, base) for item in schema]
    return schema


def required_schema(tools: list[ChatCompletionTool], parallel: bool) -> dict[str, Any]:
    """An array of ``{"name", "parameters"}`` calls. Each tool's schema moves under ``$defs`` with its references
    rebased, so the ``$ref``/``$defs`` that pydantic writes for nested arguments still resolve inside ``anyOf``."""
    definitions = {
        f"tool_{i}": rebased(tool.function.parameters_schema, f"#/$defs/tool_{i}") for i, tool in enumerate(tools)
    }
    calls = [
        {
            "type": "object",
            "properties": {
                "name": {"type": "string", "enum": [tool.function.name]},
                "parameters": {"$ref": f"#/$defs/tool_{i}"},
            },
            "required": ["name", "parameters"],
            "additionalProperties": False,
        }
        for i, tool in enumerate(tools)
    ]
    schema: dict[str, Any] = {"type": "array", "minItems": 1, "items": {"anyOf": calls}, "$defs": definitions}
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
    return StructuredOutput(json_schema=response_format.json_schema.schema_, param="response_format.json_schema.schema")


def plan_output(request: ChatCompletionRequest, has_tool_parser: bool) -> OutputPlan:
    mode = request.tool_mode
    tools = request.tools or []
    if mode == "named":
        name = request.tool_choice.function.name  # type: ignore[union-attr]
        index = next(i for i, tool in enumerate(tools) if tool.function.name == name)
        schema = StructuredOutput(
            json_schema=tools[index].function.parameters_schema, param=f"tools[{index}].function.parameters"
        )
        return OutputPlan("named", schema, name)
    if mode == "required":
        schema = StructuredOutput(json_schema=required_schema(tools, request.parallel_tool_calls), param="tools")
        return OutputPlan("required", schema)
    response_format = response_format_output(request)
    if mode == "auto" and has_tool_parser:
        return OutputPlan("auto", response_format)
    if mode == "auto" and response_format is None:
        tag = tool_format.auto_tag(tools, request.parallel_tool_calls)
        return OutputPlan("auto", StructuredOutput(structural_tag=tag, param="tools"))
    return OutputPlan("text", response_format)
