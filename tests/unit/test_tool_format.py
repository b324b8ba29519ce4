"""The generic tool-call format: its preamble and its structural tag (vLLM's hermes parser reads it back:
test_output_parsers.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from openai_routes.pipeline.tool_format import auto_tag, preamble, with_preamble
from openai_routes.protocol.tools import ChatCompletionTool

WEATHER: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
TOOL = ChatCompletionTool.model_validate(WEATHER)


def test_the_preamble_names_every_tool_with_its_schema_and_the_call_format() -> None:
    text = preamble([TOOL])
    assert '"name": "get_weather"' in text and json.dumps(WEATHER["function"]["parameters"]) in text
    assert '<tool_call>{"name": ' in text


def test_the_preamble_goes_first_in_the_system_message() -> None:
    system = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    assert with_preamble(system, [TOOL])[0]["content"].endswith("\n\nBe brief.")
    assert len(with_preamble(system, [TOOL])) == 2
    user = [{"role": "user", "content": "hi"}]
    assert [m["role"] for m in with_preamble(user, [TOOL])] == ["system", "user"]


@pytest.mark.parametrize("parallel", [True, False])
def test_the_auto_tag_holds_each_call_to_its_tool_schema(parallel: bool) -> None:
    tag = auto_tag([TOOL], parallel)["format"]
    assert tag["triggers"] == ["<tool_call>"] and tag["stop_after_first"] is not parallel
    [item] = tag["tags"]
    assert item["begin"] == '<tool_call>{"name": "get_weather", "arguments": '
    assert item["content"]["json_schema"] == WEATHER["function"]["parameters"] and item["end"] == "}</tool_call>"
