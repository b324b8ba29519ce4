"""Structured outputs and tool calling on the default SmolLM2 model, enforced by constrained decoding."""

from __future__ import annotations

import json
from typing import Annotated, Any

import httpx
import jsonschema
import openai
import pydantic
import pytest

from tests.e2e.conftest import CHAT_MODEL

WEATHER: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}
TIME: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Get the current time in a timezone",
        "parameters": {
            "type": "object",
            "properties": {"timezone": {"type": "string"}},
            "required": ["timezone"],
            "additionalProperties": False,
        },
    },
}
TOOLS: list[Any] = [WEATHER, TIME]
PARAMETERS = {tool["function"]["name"]: tool["function"]["parameters"] for tool in TOOLS}
ASK: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]
CAT_SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
    "additionalProperties": False,
}


def chat(client: openai.OpenAI, **kwargs: Any) -> Any:
    kwargs.setdefault("messages", ASK)
    kwargs.setdefault("max_tokens", 200)
    return client.chat.completions.create(model=CHAT_MODEL, temperature=0, **kwargs)


def assert_valid_calls(message: Any, names: set[str]) -> None:
    assert message.content is None
    assert message.tool_calls
    for call in message.tool_calls:
        assert call.type == "function" and call.id.startswith("call_")
        assert call.function.name in names
        jsonschema.validate(json.loads(call.function.arguments), PARAMETERS[call.function.name])
    assert len({call.id for call in message.tool_calls}) == len(message.tool_calls)


def test_json_object_is_one_parseable_object(client: openai.OpenAI) -> None:
    for prompt in ("Describe a cat as JSON.", "List three colors.", "Hello!"):
        reply = chat(client, messages=[{"role": "user", "content": prompt}], response_format={"type": "json_object"})
        assert reply.choices[0].finish_reason == "stop"
        assert isinstance(json.loads(reply.choices[0].message.content), dict)


def test_json_schema_output_validates(client: openai.OpenAI) -> None:
    reply = chat(
        client,
        messages=[{"role": "user", "content": "Describe a cat."}],
        response_format={"type": "json_schema", "json_schema": {"name": "cat", "schema": CAT_SCHEMA, "strict": True}},
    )
    jsonschema.validate(json.loads(reply.choices[0].message.content), CAT_SCHEMA)


def test_json_schema_streamed_equals_plain(client: openai.OpenAI) -> None:
    fmt: Any = {"type": "json_schema", "json_schema": {"name": "cat", "schema": CAT_SCHEMA}}
    messages: Any = [{"role": "user", "content": "Describe a cat."}]
    plain = chat(client, messages=messages, response_format=fmt).choices[0].message.content
    stream = chat(client, messages=messages, response_format=fmt, stream=True)
    streamed = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert streamed == plain


@pytest.mark.parametrize(
    ("response_format", "param"),
    [
        ({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nonsense"}}}, "response_format"),
        ({"type": "json_schema"}, "response_format"),
        ({"type": "yaml"}, "response_format"),
    ],
)
def test_invalid_response_format_is_400(http: httpx.Client, response_format: Any, param: str) -> None:
    body = {"model": CHAT_MODEL, "messages": ASK, "response_format": response_format}
    response = http.post("/v1/chat/completions", json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"].startswith(param)


def test_tool_choice_none_answers_in_text(client: openai.OpenAI) -> None:
    reply = chat(client, tools=TOOLS, tool_choice="none", max_tokens=20)
    assert reply.choices[0].message.tool_calls is None
    assert reply.choices[0].message.content
    assert reply.choices[0].finish_reason in ("stop", "length")


def test_tool_choice_required_calls_a_tool_with_valid_arguments(client: openai.OpenAI) -> None:
    reply = chat(client, tools=TOOLS, tool_choice="required")
    assert reply.choices[0].finish_reason == "tool_calls"
    assert_valid_calls(reply.choices[0].message, {"get_weather", "get_time"})


def test_named_tool_choice_calls_exactly_that_tool(client: openai.OpenAI) -> None:
    reply = chat(client, tools=TOOLS, tool_choice={"type": "function", "function": {"name": "get_time"}})
    assert reply.choices[0].finish_reason == "tool_calls"
    assert_valid_calls(reply.choices[0].message, {"get_time"})
    assert len(reply.choices[0].message.tool_calls) == 1


def test_parallel_tool_calls_false_gives_at_most_one(client: openai.OpenAI) -> None:
    messages: Any = [{"role": "user", "content": "Weather in Paris and in Rome, and the time in Tokyo?"}]
    reply = chat(client, messages=messages, tools=TOOLS, tool_choice="required", parallel_tool_calls=False)
    assert len(reply.choices[0].message.tool_calls) == 1
    assert_valid_calls(reply.choices[0].message, {"get_weather", "get_time"})


def test_tools_reach_a_model_whose_template_ignores_them(client: openai.OpenAI) -> None:
    """SmolLM2's template drops ``tools``: they come in a system preamble, so the prompt grows by their definitions."""
    bare = chat(client, max_tokens=1).usage.prompt_tokens
    with_tools = chat(client, tools=TOOLS, max_tokens=1).usage.prompt_tokens
    assert with_tools > bare + 60, (bare, with_tools)


def test_auto_text_answer_with_tools_streams_token_by_token(client: openai.OpenAI) -> None:
    """``auto`` without a native parser: the generic format's text streams as it comes, not once the choice ends."""
    chunks = list(chat(client, tools=TOOLS, messages=[{"role": "user", "content": "Tell me a joke."}], stream=True,
                       max_tokens=40))  # fmt: skip
    content = [chunk.choices[0].delta.content for chunk in chunks if chunk.choices and chunk.choices[0].delta.content]
    assert len(content) >= 10, content
    plain = chat(client, tools=TOOLS, messages=[{"role": "user", "content": "Tell me a joke."}], max_tokens=40)
    assert "".join(content) == plain.choices[0].message.content


def test_sdk_stream_helper_with_tools(client: openai.OpenAI) -> None:
    """The SDK's ``chat.completions.stream()`` merges deltas key by key: a tool call's later deltas carry no nulls."""
    with client.chat.completions.stream(
        model=CHAT_MODEL, messages=ASK, tools=TOOLS, tool_choice="required", max_tokens=200, temperature=0
    ) as stream:
        events = [event.type for event in stream]
        final = stream.get_final_completion()
    assert "tool_calls.function.arguments.delta" in events
    assert_valid_calls(final.choices[0].message, {"get_weather", "get_time"})


@pytest.mark.parametrize("tool_choice", ["required", {"type": "function", "function": {"name": "get_weather"}}])
def test_streamed_tool_calls_match_non_streamed(client: openai.OpenAI, tool_choice: Any) -> None:
    plain = chat(client, tools=TOOLS, tool_choice=tool_choice).choices[0].message.tool_calls
    calls: dict[int, dict[str, Any]] = {}
    finish_reasons = []
    for chunk in chat(client, tools=TOOLS, tool_choice=tool_choice, stream=True):
        if not chunk.choices:
            continue
        choice = chunk.choices[0]
        if choice.finish_reason:
            finish_reasons.append(choice.finish_reason)
        for delta in choice.delta.tool_calls or []:
            if delta.index not in calls:  # the first delta of a call names it
                assert delta.id and delta.id.startswith("call_") and delta.type == "function"
                assert delta.function and delta.function.name
                calls[delta.index] = {"name": delta.function.name, "arguments": ""}
            else:
                assert delta.id is None
            calls[delta.index]["arguments"] += (delta.function and delta.function.arguments) or ""
    assert finish_reasons == ["tool_calls"]
    assert [(c["name"], c["arguments"]) for c in calls.values()] == [
        (c.function.name, c.function.arguments) for c in plain
    ]


def test_follow_up_with_tool_results_is_answered(client: openai.OpenAI) -> None:
    first = chat(client, tools=TOOLS, tool_choice={"type": "function", "function": {"name": "get_weather"}})
    call = first.choices[0].message.tool_calls[0]
    messages: Any = [
        *ASK,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.function.name, "arguments": call.function.arguments},
                }
            ],
        },
        {"role": "tool", "tool_call_id": call.id, "content": '{"temperature": 21, "sky": "sunny"}'},
    ]
    reply = chat(client, messages=messages, tools=TOOLS, max_tokens=30)
    assert reply.choices[0].message.content
    assert reply.choices[0].finish_reason in ("stop", "length")


@pytest.mark.parametrize(
    ("patch", "param"),
    [
        ({"tool_choice": {"type": "function", "function": {"name": "no_such_tool"}}}, "tool_choice"),
        ({"tools": [{"type": "function", "function": {"name": "bad", "parameters": {"type": 12}}}]}, "tools"),
        ({"tools": [{"type": "function", "function": {"name": "has spaces"}}]}, "tools"),
        ({"tools": [WEATHER, WEATHER]}, "tools"),
        ({"tools": None, "tool_choice": "required"}, "tool_choice"),
    ],
    ids=["unknown-tool-choice", "malformed-schema", "bad-name", "duplicate-names", "required-without-tools"],
)
def test_bad_tools_are_400_with_param(http: httpx.Client, patch: dict[str, Any], param: str) -> None:
    body = {"model": CHAT_MODEL, "messages": ASK, "tools": TOOLS, **patch}
    response = http.post("/v1/chat/completions", json={k: v for k, v in body.items() if v is not None})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"].startswith(param)


def test_langchain_bind_tools_and_structured_output(server: Any) -> None:
    from langchain_core.messages import HumanMessage
    from langchain_openai import ChatOpenAI
    from pydantic import BaseModel

    llm = ChatOpenAI(
        model=CHAT_MODEL, base_url=f"{server.base_url}/v1", api_key=server.api_key, temperature=0, max_retries=0
    )
    bound = llm.bind_tools([WEATHER], tool_choice="get_weather")
    message = bound.invoke([HumanMessage("What is the weather in Paris?")])
    assert message.tool_calls and message.tool_calls[0]["name"] == "get_weather"
    jsonschema.validate(message.tool_calls[0]["args"], PARAMETERS["get_weather"])

    class Cat(BaseModel):
        name: str
        age: int

    cat = llm.with_structured_output(Cat).invoke("Describe a cat.")
    assert isinstance(cat, Cat)


def test_langchain_agent_loop_with_bind_tools(server: Any) -> None:
    """LangChain's tool loop, unmodified: the model calls (the first turn forced with ``tool_choice="any"``, which
    LangChain sends as ``required``: the 135M model does not choose to call by itself), the tool runs, its result
    goes back as a ``ToolMessage``, and the loop ends when an ``auto`` turn answers in text. Streamed turns too."""
    from langchain_core.messages import BaseMessage, HumanMessage, ToolMessage
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI

    ran: list[str] = []

    @tool
    def get_weather(city: str) -> str:
        """Current weather in a city."""
        ran.append(city)
        return f"Sunny and 21 C in {city}."

    llm = ChatOpenAI(
        model=CHAT_MODEL, base_url=f"{server.base_url}/v1", api_key=server.api_key, temperature=0, max_retries=0,
        max_tokens=60, streaming=True,  # type: ignore[call-arg]  # max_tokens is the field's alias
    )  # fmt: skip
    first, then = llm.bind_tools([get_weather], tool_choice="any"), llm.bind_tools([get_weather])
    messages: list[BaseMessage] = [HumanMessage("What is the weather in Paris?")]
    reply = first.invoke(messages)
    first_ids = [call["id"] for call in reply.tool_calls]
    turns = 1
    while reply.tool_calls and turns < 4:
        messages.append(reply)
        for call in reply.tool_calls:
            messages.append(ToolMessage(get_weather.invoke(call["args"]), tool_call_id=call["id"]))
        reply = then.invoke(messages)
        turns += 1
    assert ran, "the tool never ran"
    assert not reply.tool_calls and isinstance(reply.content, str) and reply.content.strip(), reply
    assert first_ids and all(str(call_id).startswith("call_") for call_id in first_ids)


Name = Annotated[str, pydantic.Field(max_length=24)]  # bounded: a 135M model may ramble inside a free string


class Address(pydantic.BaseModel):
    city: Name
    country: Name


class Booking(pydantic.BaseModel):
    guest: Name
    home: Address
    stops: list[Address] = pydantic.Field(max_length=2)


BOOKING = {
    "type": "function",
    "function": {"name": "book_trip", "description": "Book a trip", "parameters": Booking.model_json_schema()},
}


@pytest.mark.parametrize("tool_choice", ["required", {"type": "function", "function": {"name": "book_trip"}}])
def test_pydantic_nested_schema_works_in_every_constrained_mode(client: openai.OpenAI, tool_choice: Any) -> None:
    """pydantic writes ``$ref``/``$defs`` for nested arguments; the required plan nests schemas under ``anyOf``."""
    assert "$defs" in BOOKING["function"]["parameters"]  # type: ignore[index]
    reply = client.chat.completions.create(
        model=CHAT_MODEL,
        messages=[{"role": "user", "content": "Book a trip for Ada from London with a stop in Paris."}],
        tools=[BOOKING, WEATHER],  # type: ignore[list-item]
        tool_choice=tool_choice,
        max_tokens=200,
        temperature=0,
    )
    calls = reply.choices[0].message.tool_calls or []
    assert calls, reply.choices[0]
    for call in calls:
        assert call.type == "function"
        schema = BOOKING if call.function.name == "book_trip" else WEATHER
        jsonschema.validate(json.loads(call.function.arguments), schema["function"]["parameters"])  # type: ignore[index]


def test_pydantic_nested_schema_as_response_format(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model=CHAT_MODEL,
        messages=[{"role": "user", "content": "Describe a booking for Ada."}],
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "booking", "schema": Booking.model_json_schema()},
        },
        max_tokens=200,
        temperature=0,
    )
    Booking.model_validate_json(reply.choices[0].message.content or "")


CITY_WEATHER: dict[str, Any] = {  # the README's tool (and the Agents SDK's): the city only
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def streamed_calls(client: openai.OpenAI, **kwargs: Any) -> tuple[list[tuple[str, str]], list[str], Any]:
    """A streamed chat's calls (name, arguments) as the chunks build them, its finish reasons and its usage."""
    calls: dict[int, list[str]] = {}
    finishes, usage = [], None
    for chunk in chat(client, stream=True, stream_options={"include_usage": True}, **kwargs):
        usage = chunk.usage or usage
        for choice in chunk.choices:
            finishes += [choice.finish_reason] if choice.finish_reason else []
            for delta in choice.delta.tool_calls or []:
                call = calls.setdefault(delta.index, ["", ""])
                call[0] += (delta.function and delta.function.name) or ""
                call[1] += (delta.function and delta.function.arguments) or ""
    return [(name, arguments) for name, arguments in calls.values()], finishes, usage


def test_required_parallel_calls_end_at_the_first_repeat(client: openai.OpenAI) -> None:
    """Issue 25: forced and free to call in parallel, the 135M model repeats ``get_weather({"city":"Paris"})`` until
    ``max_tokens`` (before the loop guard: ``length`` at 400 of 400 tokens, 21 identical calls in the raw text and no
    calls; 1896 tokens and 100 calls without ``max_tokens``). The guard ends the choice at the first repeat (now one
    call, ``tool_calls``, 38 tokens): distinct calls only, the engine stopped there; a stream sends the same calls."""
    fields: dict[str, Any] = {"tools": [CITY_WEATHER], "tool_choice": "required", "max_tokens": 400}
    reply = chat(client, **fields)
    choice = reply.choices[0]
    calls = [(call.function.name, call.function.arguments) for call in choice.message.tool_calls or []]
    assert choice.finish_reason == "tool_calls", (choice.finish_reason, reply.usage, choice.message.content)
    assert calls and choice.message.content is None
    parsed = [json.loads(arguments) for _, arguments in calls]
    assert {name for name, _ in calls} == {"get_weather"} and all(isinstance(args["city"], str) for args in parsed)
    assert len({json.dumps(args, sort_keys=True) for args in parsed}) == len(calls), calls
    assert reply.usage.completion_tokens < 200, reply.usage  # stopped at the repeat, far from max_tokens
    streamed, finishes, usage = streamed_calls(client, **fields)
    assert (streamed, finishes) == (calls, ["tool_calls"])
    assert usage.completion_tokens == reply.usage.completion_tokens
