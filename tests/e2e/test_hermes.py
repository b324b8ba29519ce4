"""The native tool-parser path on CPU: the default weights served as ``smollm2-hermes`` with the Hermes-style
template from ``configs/templates`` and vLLM's ``hermes`` parser (``tests/configs/generation-defaults.yaml``, whose
engine also serves test_engine_errors' queue-overflow test)."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest

from tests.e2e.pool import ServerPool

MODEL = "smollm2-hermes"
WEATHER: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
ASK: Any = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture(scope="module")
def hermes(pool: ServerPool) -> openai.OpenAI:
    server = pool.get("generation-defaults")
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=server.api_key, max_retries=0, timeout=120)


def test_the_configured_template_renders_the_tools(hermes: openai.OpenAI) -> None:
    bare = hermes.chat.completions.create(model=MODEL, messages=ASK, max_tokens=1).usage
    with_tools = hermes.chat.completions.create(model=MODEL, messages=ASK, tools=[WEATHER], max_tokens=1).usage
    assert bare is not None and with_tools is not None
    assert with_tools.prompt_tokens > bare.prompt_tokens + 60


def test_auto_with_the_native_parser_answers_without_special_tokens(hermes: openai.OpenAI) -> None:
    reply = hermes.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Tell me a joke."}], tools=[WEATHER], max_tokens=40,
        temperature=0,
    )  # fmt: skip
    message = reply.choices[0].message
    assert message.content and not message.tool_calls
    assert "<|im_end|>" not in message.content and "<|im_start|>" not in message.content


def test_a_follow_up_with_a_call_and_its_result_renders_through_the_template(hermes: openai.OpenAI) -> None:
    """A follow-up with the assistant's call and the tool's result renders through the template and is answered."""
    first = hermes.chat.completions.create(
        model=MODEL, messages=ASK, tools=[WEATHER], tool_choice="required", parallel_tool_calls=False,
        max_tokens=200, temperature=0,
    )  # fmt: skip
    calls: Any = first.choices[0].message.tool_calls or []
    [call] = calls
    assert call.function.name == "get_weather" and "city" in json.loads(call.function.arguments)
    follow_up: Any = [
        *ASK,
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump(exclude_none=True)]},
        {"role": "tool", "tool_call_id": call.id, "content": "Sunny, 21 C"},
    ]
    reply = hermes.chat.completions.create(model=MODEL, messages=follow_up, tools=[WEATHER], max_tokens=30)
    assert reply.choices[0].message.content


def test_chat_template_kwargs_reach_the_template(hermes: openai.OpenAI) -> None:
    """The Hermes template reads ``default_system``: given per request, it replaces the default system text."""
    plain = hermes.chat.completions.create(model=MODEL, messages=ASK, max_tokens=1).usage
    longer = "You are a meteorologist who answers in exactly one short sentence, citing the source."
    extra = hermes.chat.completions.create(
        model=MODEL, messages=ASK, max_tokens=1, extra_body={"chat_template_kwargs": {"default_system": longer}}
    ).usage
    assert plain is not None and extra is not None and extra.prompt_tokens > plain.prompt_tokens + 8
