"""The generic tool-call format, for models whose chat template ignores ``tools`` or that have no tool-call parser.

Such a model learns its tools from a preamble in the system message (names, descriptions, parameter schemas and
how to call), as llama.cpp's generic handler teaches them, and calls in Hermes's format::

    <tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>

so vLLM's ``hermes`` parser reads the calls back, as they stream (``engines/vllm_output.py``). In ``auto`` mode a
structural tag enforces the format (``auto_tag``): the model writes free text, and once it writes ``<tool_call>``
the grammar holds it to a call whose arguments match that tool's schema, so a call is always parseable.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from openai_routes.protocol.tools import ChatCompletionTool

START = "<tool_call>"
END = "</tool_call>"
PARSER = "hermes"  # vLLM's parser for this format


def preamble(tools: Sequence[ChatCompletionTool]) -> str:
    """The system-message text that tells a model its tools and how to call them."""
    listed = "\n".join(
        json.dumps(
            {
                "name": tool.function.name,
                "description": tool.function.description or "",
                "parameters": tool.function.parameters_schema,
            },
            ensure_ascii=False,
        )
        for tool in tools
    )
    return (
        "You can call these tools (JSON Schema of each tool's arguments):\n"
        f"{listed}\n\n"
        "When a tool can answer the user, call it instead of answering: reply with only\n"
        f'{START}{{"name": "<tool name>", "arguments": {{<arguments as JSON>}}}}{END}\n'
        "one line per call. After a tool's result arrives, answer the user in plain text."
    )


def with_preamble(messages: list[dict[str, Any]], tools: Sequence[ChatCompletionTool]) -> list[dict[str, Any]]:
    """``messages`` with the preamble at the start of the system message (a new one when there is none)."""
    text = preamble(tools)
    if messages and messages[0].get("role") == "system" and isinstance(messages[0].get("content"), str):
        first = {**messages[0], "content": f"{text}\n\n{messages[0]['content']}"}
        return [first, *messages[1:]]
    return [{"role": "system", "content": text}, *messages]


def call_begin(name: str) -> str:
    return f'{START}{{"name": {json.dumps(name, ensure_ascii=False)}, "arguments": '


def auto_tag(tools: Sequence[ChatCompletionTool], parallel: bool) -> dict[str, Any]:
    """xgrammar's structural tag for ``auto``: free text, and calls in the generic format with valid arguments."""
    tags = [
        {
            "type": "tag",
            "begin": call_begin(tool.function.name),
            "content": {"type": "json_schema", "json_schema": tool.function.parameters_schema},
            "end": "}" + END,
        }
        for tool in tools
    ]
    triggered = {"type": "triggered_tags", "triggers": [START], "tags": tags, "stop_after_first": not parallel}
    return {"type": "structural_tag", "format": triggered}
