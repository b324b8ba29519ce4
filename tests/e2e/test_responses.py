"""``/v1/responses`` through the official SDK and raw HTTP, against the real engine and the session server's store.

Greedy answers of SmolLM2-135M-Instruct are deterministic and a response runs as a chat request, so most checks
compare a response with the chat completion of the same conversation (``test_chat.py`` checks chat against the
tokenizer): the same prompt tokens, the same text. That is how instructions, replayed items, chains and function
call outputs are shown to reach the prompt where they should.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema
import openai
import pydantic
import pytest
from openai.types.chat import ChatCompletion
from openai.types.responses import Response

from tests.e2e import test_tools
from tests.e2e.conftest import CHAT_MODEL
from tests.e2e.probes import (
    endless_response,
    engine_running,
    envelope,
    response_events,
    wait_engine_idle,
    wait_for,
)
from tests.e2e.server import Server
from tests.schema_check import check, check_event

RESPONSES = "/v1/responses"
SENTINEL = "sentinel-5c1e0b7d"  # in bad requests: an error body must not echo the caller's input (ids and names aside)
FRANCE = "What is the capital of France?"
ASK = "What is the weather in Paris?"
STORY = "Write a long story about a lighthouse keeper."
ABORT_WITHIN = 10  # seconds for the engine to drop an aborted request (test_disconnect.py's bound)

# The chat tests' tools, in the Responses API's flat shape (no nested ``function``).
WEATHER: dict[str, Any] = {"type": "function", **test_tools.WEATHER["function"]}
TIME: dict[str, Any] = {"type": "function", **test_tools.TIME["function"]}
TOOLS: list[Any] = [WEATHER, TIME]
PARAMETERS = {tool["name"]: tool["parameters"] for tool in TOOLS}
CAT_SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 20}, "age": {"type": "integer"}},
    "required": ["name", "age"],
    "additionalProperties": False,
}
TEXT_EVENTS = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
    "response.output_text.delta",
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
]
CALL_EVENTS = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.function_call_arguments.delta",
    "response.function_call_arguments.done",
    "response.output_item.done",
    "response.completed",
]


def respond(client: openai.OpenAI, input: Any = FRANCE, **params: Any) -> Response:
    """A greedy, non-streamed response (30 tokens unless told)."""
    params.setdefault("max_output_tokens", 30)
    params.setdefault("temperature", 0)
    response: Response = client.responses.create(model=CHAT_MODEL, input=input, stream=False, **params)
    return response


def chat(client: openai.OpenAI, messages: Any, max_tokens: int = 30, **params: Any) -> ChatCompletion:
    """The oracle: the greedy chat completion of the conversation a response should have run."""
    completion: ChatCompletion = client.chat.completions.create(
        model=CHAT_MODEL, messages=messages, max_tokens=max_tokens, temperature=0, stream=False, **params
    )
    return completion


def chat_tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Flat Responses tools in chat's nested shape."""
    return [{"type": "function", "function": {k: v for k, v in tool.items() if k != "type"}} for tool in tools]


def message_text(response: Response) -> str:
    """The text of a response whose output is one assistant message (checking the message's shape)."""
    [item] = response.output
    assert item.type == "message" and item.role == "assistant" and item.id.startswith("msg_"), item
    [part] = item.content
    assert part.type == "output_text", part
    assert response.output_text == part.text
    return part.text


def chat_text(completion: ChatCompletion) -> str:
    content = completion.choices[0].message.content
    assert content is not None
    return content


def assert_same_run(response: Response, completion: ChatCompletion) -> None:
    """The response ran the completion's prompt and generated its text."""
    assert response.usage is not None and completion.usage is not None
    assert response.usage.input_tokens == completion.usage.prompt_tokens
    assert message_text(response) == chat_text(completion)
    assert response.usage.output_tokens == completion.usage.completion_tokens


def function_calls(response: Response) -> list[Any]:
    calls = [item for item in response.output if item.type == "function_call"]
    for call in calls:
        assert call.id is not None and call.id.startswith("fc_") and call.call_id.startswith("call_"), call
        jsonschema.validate(json.loads(call.arguments), PARAMETERS[call.name])
        assert call.status == "completed"
    assert len({call.call_id for call in calls}) == len(calls)
    return calls


def stream_events(http: httpx.Client, **body: Any) -> list[dict[str, Any]]:
    body = {"model": CHAT_MODEL, "temperature": 0, "max_output_tokens": 30, **body, "stream": True}
    with http.stream("POST", RESPONSES, json=body) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        raw = response.read().decode()
    return response_events(raw)


def collapsed(events: list[dict[str, Any]]) -> list[str]:
    """The event types with runs of one type (the deltas) shown once."""
    types = [event["type"] for event in events]
    return [kind for index, kind in enumerate(types) if index == 0 or types[index - 1] != kind]


def post(http: httpx.Client, **body: Any) -> httpx.Response:
    return http.post(RESPONSES, json={"model": CHAT_MODEL, "input": FRANCE, "max_output_tokens": 16, **body})


@pytest.fixture(scope="module")
def paris(client: openai.OpenAI) -> Response:
    """The greedy answer to the France question, the reference for several tests."""
    return respond(client)


# --- one response --------------------------------------------------------------------------------------------


def test_capital_of_france(paris: Response, client: openai.OpenAI) -> None:
    assert paris.id.startswith("resp_") and paris.object == "response" and paris.model == CHAT_MODEL
    assert abs(paris.created_at - time.time()) < 120
    assert (paris.status, paris.error, paris.incomplete_details) == ("completed", None, None)
    assert paris.output[0].status == "completed"  # type: ignore[union-attr]
    assert "Paris" in message_text(paris)
    assert_same_run(paris, chat(client, [{"role": "user", "content": FRANCE}]))
    assert paris.usage is not None
    assert paris.usage.total_tokens == paris.usage.input_tokens + paris.usage.output_tokens
    assert paris.usage.output_tokens_details.reasoning_tokens == 0
    assert 0 <= paris.usage.input_tokens_details.cached_tokens <= paris.usage.input_tokens
    assert paris.to_dict()["store"] is True and paris.background is False
    assert paris.previous_response_id is None and paris.instructions is None
    assert (paris.tools, paris.tool_choice, paris.parallel_tool_calls) == ([], "auto", True)
    assert paris.max_output_tokens == 30 and paris.temperature == 0
    assert paris.text is not None and paris.text.format is not None and paris.text.format.type == "text"


@pytest.mark.parametrize(
    "items",
    [
        [{"role": "user", "content": FRANCE}],
        [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": FRANCE}]}],
        [
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "What is the capital "},
                    {"type": "input_text", "text": "of France?"},
                ],
            }
        ],
    ],
    ids=["easy-message", "typed-message", "two-parts"],
)
def test_input_items_run_as_the_string(client: openai.OpenAI, paris: Response, items: list[Any]) -> None:
    answer = respond(client, items)
    assert answer.usage is not None and paris.usage is not None
    assert (message_text(answer), answer.usage.input_tokens) == (message_text(paris), paris.usage.input_tokens)


def test_replayed_output_items_are_accepted(client: openai.OpenAI, paris: Response) -> None:
    """Clients send ``response.output`` back as they got it: the message's ``id``, ``status``, and the part's
    ``annotations`` and ``logprobs`` ride along and the text becomes an assistant turn."""
    replayed: Any = paris.output[0].to_dict()
    assert {"id", "status"} <= set(replayed) and {"annotations", "logprobs"} <= set(replayed["content"][0])
    follow_up = "And of Germany?"
    answer = respond(client, [{"role": "user", "content": FRANCE}, replayed, {"role": "user", "content": follow_up}])
    oracle = chat(
        client,
        [
            {"role": "user", "content": FRANCE},
            {"role": "assistant", "content": message_text(paris)},
            {"role": "user", "content": follow_up},
        ],
    )
    assert_same_run(answer, oracle)


def test_input_tokens_count_what_a_create_reports(client: openai.OpenAI, paris: Response) -> None:
    """``client.responses.input_tokens.count``: the same input rules as create (chain, instructions, tools)."""
    counted = client.responses.input_tokens.count(model=CHAT_MODEL, input=FRANCE)
    assert counted.object == "response.input_tokens"
    assert paris.usage is not None and counted.input_tokens == paris.usage.input_tokens
    chain: dict[str, Any] = {"previous_response_id": paris.id, "instructions": "Answer briefly.", "tools": [WEATHER]}
    chained = client.responses.input_tokens.count(model=CHAT_MODEL, input="And of Spain?", **chain)
    created = respond(client, "And of Spain?", max_output_tokens=16, **chain)
    assert created.usage is not None and chained.input_tokens == created.usage.input_tokens > counted.input_tokens


def test_instructions_are_a_system_message_and_echoed(client: openai.OpenAI) -> None:
    instructions = "You are a pirate. Answer like one."
    answer = respond(client, instructions=instructions)
    assert answer.instructions == instructions
    oracle = chat(client, [{"role": "system", "content": instructions}, {"role": "user", "content": FRANCE}])
    assert_same_run(answer, oracle)


def test_system_and_developer_messages(client: openai.OpenAI) -> None:
    items = [
        {"role": "system", "content": "You are a geography tutor."},
        {"role": "developer", "content": "Answer in one sentence."},
        {"role": "user", "content": FRANCE},
    ]
    assert_same_run(respond(client, items), chat(client, items))


def test_max_output_tokens_cut_is_incomplete(client: openai.OpenAI) -> None:
    cut = respond(client, STORY, max_output_tokens=16)
    assert cut.status == "incomplete" and cut.incomplete_details is not None
    assert cut.incomplete_details.reason == "max_output_tokens"
    assert cut.output[0].status == "incomplete"  # type: ignore[union-attr]
    assert cut.usage is not None and cut.usage.output_tokens == 16
    oracle = chat(client, [{"role": "user", "content": STORY}], max_tokens=16)
    assert oracle.choices[0].finish_reason == "length"
    assert_same_run(cut, oracle)


def test_settings_are_echoed_and_documented_extras_accepted(client: openai.OpenAI) -> None:
    metadata = {"ticket": "T-1", "team": "geo"}
    answer = client.responses.create(
        model=CHAT_MODEL,
        input=FRANCE,
        max_output_tokens=20,
        temperature=0.7,
        top_p=0.9,
        metadata=metadata,
        user="user-1234",
        truncation="disabled",
        include=["message.output_text.logprobs"],
        prompt_cache_key="geo",
        safety_identifier="hashed-user",
        reasoning={"effort": "low"},
        service_tier="auto",
        extra_body={"not_an_openai_field": True},
    )
    assert answer.status in ("completed", "incomplete") and message_text(answer)
    assert (answer.metadata, answer.temperature, answer.top_p) == (metadata, 0.7, 0.9)
    assert answer.user == "user-1234" and answer.max_output_tokens == 20


def test_cached_tokens_are_the_engines_count(client: openai.OpenAI) -> None:
    """Prefix caching: the same long prompt twice; the count is the engine's, as chat reports it."""
    text = " ".join(f"Fact {i}: the number {i} is {'even' if i % 2 == 0 else 'odd'}." for i in range(60))
    first = respond(client, text, max_output_tokens=16)
    second = respond(client, text, max_output_tokens=16)
    oracle = chat(client, [{"role": "user", "content": text}], max_tokens=16)
    assert first.usage is not None and second.usage is not None and oracle.usage is not None
    assert oracle.usage.prompt_tokens_details is not None
    assert 0 <= first.usage.input_tokens_details.cached_tokens <= first.usage.input_tokens
    assert second.usage.input_tokens_details.cached_tokens == oracle.usage.prompt_tokens_details.cached_tokens


# --- formats -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("prompt", ["Describe a cat as JSON.", "Hello!"])
def test_json_object_is_one_parseable_object(client: openai.OpenAI, prompt: str) -> None:
    answer = respond(client, prompt, text={"format": {"type": "json_object"}}, max_output_tokens=200)
    assert answer.status == "completed"
    assert isinstance(json.loads(message_text(answer)), dict)
    assert answer.text is not None and answer.text.format is not None and answer.text.format.type == "json_object"


def test_json_schema_output_validates(client: openai.OpenAI) -> None:
    fmt = {"type": "json_schema", "name": "cat", "schema": CAT_SCHEMA, "strict": True}
    answer = respond(client, "Describe a cat.", text={"format": fmt}, max_output_tokens=200)
    assert answer.status == "completed"
    jsonschema.validate(json.loads(message_text(answer)), CAT_SCHEMA)
    assert answer.text is not None and answer.text.format is not None
    echoed = answer.text.format.to_dict()
    assert {key: echoed.get(key) for key in fmt} == fmt


def test_sdk_parse_gives_the_pydantic_object(client: openai.OpenAI) -> None:
    class Cat(pydantic.BaseModel):
        name: str = pydantic.Field(max_length=20)
        age: int

    parsed = client.responses.parse(
        model=CHAT_MODEL, input="Describe a cat.", text_format=Cat, max_output_tokens=200, temperature=0
    )
    assert isinstance(parsed.output_parsed, Cat)


# --- tools ---------------------------------------------------------------------------------------------------


def test_required_calls_a_tool_with_valid_arguments(client: openai.OpenAI) -> None:
    answer = respond(client, ASK, tools=TOOLS, tool_choice="required", max_output_tokens=200)
    assert answer.status == "completed"
    calls = function_calls(answer)
    assert calls and len(calls) == len(answer.output), answer.output
    assert answer.tool_choice == "required"
    echoed = [{k: v for k, v in tool.to_dict().items() if v is not None} for tool in answer.tools]
    assert echoed == [{**tool, "strict": tool.get("strict", False)} for tool in TOOLS]  # strict: as given, else false


def test_named_tool_choice_calls_exactly_that_tool(client: openai.OpenAI) -> None:
    named = {"type": "function", "name": "get_time"}
    answer = respond(client, ASK, tools=TOOLS, tool_choice=named, max_output_tokens=200)
    [call] = function_calls(answer)
    assert call.name == "get_time" and len(answer.output) == 1
    assert answer.tool_choice.to_dict() == named  # type: ignore[union-attr]


def test_parallel_tool_calls_false_gives_one_call(client: openai.OpenAI) -> None:
    many = "Weather in Paris and in Rome, and the time in Tokyo?"
    answer = respond(
        client, many, tools=TOOLS, tool_choice="required", parallel_tool_calls=False, max_output_tokens=300
    )
    assert len(function_calls(answer)) == 1 and answer.parallel_tool_calls is False


def test_tool_choice_none_answers_in_text(client: openai.OpenAI) -> None:
    answer = respond(client, ASK, tools=TOOLS, tool_choice="none", max_output_tokens=20)
    assert message_text(answer) and not function_calls(answer)


def test_tools_reach_the_prompt_as_in_chat(client: openai.OpenAI) -> None:
    """SmolLM2's template ignores tools: they come in the same system preamble as chat's, token for token."""
    answer = respond(client, ASK, tools=TOOLS, max_output_tokens=20)
    oracle = chat(client, [{"role": "user", "content": ASK}], max_tokens=20, tools=chat_tools(TOOLS))
    bare = respond(client, ASK, max_output_tokens=16)
    assert answer.usage is not None and oracle.usage is not None and bare.usage is not None
    assert answer.usage.input_tokens == oracle.usage.prompt_tokens > bare.usage.input_tokens + 60


def test_function_call_output_round_trip(client: openai.OpenAI) -> None:
    """A call, its output sent back (replayed or through ``previous_response_id``), and a text answer: both ways
    run the chat conversation with the call and its ``tool`` message."""
    first = respond(
        client, ASK, tools=[WEATHER], tool_choice={"type": "function", "name": "get_weather"}, max_output_tokens=100
    )
    [call] = function_calls(first)
    result = '{"temperature": 21, "sky": "sunny"}'
    output = {"type": "function_call_output", "call_id": call.call_id, "output": result}
    replayed = respond(client, [{"role": "user", "content": ASK}, call.to_dict(), output], tools=[WEATHER])
    chained = respond(client, [output], previous_response_id=first.id, tools=[WEATHER])
    assert chained.previous_response_id == first.id
    oracle = chat(
        client,
        [
            {"role": "user", "content": ASK},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": call.call_id,
                        "type": "function",
                        "function": {"name": call.name, "arguments": call.arguments},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": call.call_id, "content": result},
        ],
        tools=chat_tools([WEATHER]),
    )
    assert_same_run(replayed, oracle)
    assert_same_run(chained, oracle)


# --- streaming -----------------------------------------------------------------------------------------------


def test_stream_is_openais_event_sequence(http: httpx.Client, paris: Response) -> None:
    events = stream_events(http, input=FRANCE)
    assert collapsed(events) == [*TEXT_EVENTS, "response.completed"]
    created, final = events[0]["response"], events[-1]["response"]
    assert (created["status"], created["output"]) == ("in_progress", [])
    assert events[1]["response"]["id"] == created["id"] == final["id"] and created["id"].startswith("resp_")
    added = events[2]["item"]
    assert (added["type"], added["status"], added["content"]) == ("message", "in_progress", [])
    assert events[3]["part"]["type"] == "output_text" and events[3]["part"]["text"] == ""
    item_events = [event for event in events[3:-2]]  # those between the item's added and done events
    assert all(event["output_index"] == 0 for event in events[2:-1])
    assert all(event["item_id"] == added["id"] for event in item_events)
    assert all(event["content_index"] == 0 for event in item_events if "part" in event or "delta" in event)
    deltas = "".join(event["delta"] for event in events if event["type"] == "response.output_text.delta")
    [done] = [event for event in events if event["type"] == "response.output_text.done"]
    assert deltas == done["text"] == message_text(paris)
    assert events[-2]["item"]["status"] == "completed"
    assert final["status"] == "completed" and final["output"] == [events[-2]["item"]]
    assert paris.usage is not None
    assert final["usage"]["input_tokens"] == paris.usage.input_tokens
    assert final["usage"]["output_tokens"] == paris.usage.output_tokens


def test_stream_cut_by_max_output_tokens_ends_incomplete(http: httpx.Client) -> None:
    events = stream_events(http, input=STORY, max_output_tokens=16)
    assert collapsed(events) == [*TEXT_EVENTS, "response.incomplete"]
    final = events[-1]["response"]
    assert final["status"] == "incomplete" and final["incomplete_details"] == {"reason": "max_output_tokens"}
    assert final["usage"]["output_tokens"] == 16 and final["output"][0]["status"] == "incomplete"


def test_streamed_function_call_events(http: httpx.Client, client: openai.OpenAI) -> None:
    named = {"type": "function", "name": "get_weather"}
    plain = respond(client, ASK, tools=TOOLS, tool_choice=named, max_output_tokens=200)
    [call] = function_calls(plain)
    events = stream_events(http, input=ASK, tools=TOOLS, tool_choice=named, max_output_tokens=200)
    assert collapsed(events) == CALL_EVENTS
    added = events[2]["item"]
    assert (added["type"], added["name"], added["arguments"]) == ("function_call", "get_weather", "")
    assert added["status"] == "in_progress"
    assert added["id"].startswith("fc_") and added["call_id"].startswith("call_")
    deltas = [event for event in events if event["type"] == "response.function_call_arguments.delta"]
    assert all(event["item_id"] == added["id"] and event["output_index"] == 0 for event in deltas)
    [done] = [event for event in events if event["type"] == "response.function_call_arguments.done"]
    assert "".join(event["delta"] for event in deltas) == done["arguments"] == call.arguments
    item = events[-2]["item"]
    assert {key: item[key] for key in ("id", "call_id")} == {key: added[key] for key in ("id", "call_id")}
    assert (item["arguments"], item["status"]) == (call.arguments, "completed")
    assert events[-1]["response"]["output"] == [item]


def test_sdk_stream_helper(client: openai.OpenAI, paris: Response) -> None:
    """``responses.stream()`` raises unless the lifecycle is whole; ``get_final_response()`` needs the end."""
    with client.responses.stream(model=CHAT_MODEL, input=FRANCE, max_output_tokens=30, temperature=0) as stream:
        types = [event.type for event in stream]
        final = stream.get_final_response()
    assert types[0] == "response.created" and types[-1] == "response.completed"
    assert "response.output_text.delta" in types
    assert message_text(final) == message_text(paris)
    with client.responses.stream(
        model=CHAT_MODEL, input=ASK, tools=TOOLS, tool_choice="required", max_output_tokens=200, temperature=0
    ) as stream:
        types = [event.type for event in stream]
        final = stream.get_final_response()
    assert "response.function_call_arguments.delta" in types
    assert function_calls(final)


def test_sdk_stream_of_typed_events(client: openai.OpenAI, paris: Response) -> None:
    stream = client.responses.create(model=CHAT_MODEL, input=FRANCE, max_output_tokens=30, temperature=0, stream=True)
    events = list(stream)
    text = "".join(event.delta for event in events if event.type == "response.output_text.delta")
    assert text == message_text(paris)
    assert events[-1].type == "response.completed"
    assert [event.sequence_number for event in events] == list(range(len(events)))


def test_dropped_stream_is_aborted_in_the_engine(server: Server, client: openai.OpenAI) -> None:
    wait_engine_idle(server, CHAT_MODEL, timeout=60)
    stream = client.responses.create(model=CHAT_MODEL, **endless_response(stream=True))
    received = [event.type for event, _ in zip(stream, range(6), strict=False)]
    assert received[0] == "response.created" and "response.output_text.delta" in received
    assert engine_running(server.base_url, CHAT_MODEL) == 1
    stream.close()
    freed = wait_engine_idle(server, CHAT_MODEL, timeout=ABORT_WITHIN)
    print(f"\nresponses disconnect: dropped stream freed in the engine {freed:.2f} s after the client closed it")


@pytest.mark.parametrize(
    ("fields", "status", "param"),
    [
        ({"model": "no-such-model"}, 404, "model"),
        ({"max_output_tokens": 15}, 400, "max_output_tokens"),
        ({"input": "hello " * 3000}, 400, "input"),
        ({"previous_response_id": "resp_does_not_exist"}, 400, "previous_response_id"),
    ],
    ids=["unknown-model", "max_output_tokens-15", "context-overflow", "unknown-previous-response"],
)
def test_stream_errors_are_plain_http_before_the_first_byte(
    http: httpx.Client, fields: dict[str, Any], status: int, param: str
) -> None:
    body = {"model": CHAT_MODEL, "input": FRANCE, "stream": True, **fields}
    with http.stream("POST", RESPONSES, json=body) as response:
        response.read()
    assert envelope(response, status)["param"] == param


# --- stored responses ----------------------------------------------------------------------------------------


def test_raw_objects_and_events_have_every_field_of_the_sdk_types(http: httpx.Client, client: openai.OpenAI) -> None:
    """The raw JSON (the SDK would read a missing field as None): every field of ``Response`` and of each event's
    type, for a text answer, a tool call, an incomplete answer, and a stored one read back."""
    raw = client.responses.with_raw_response.create(
        model=CHAT_MODEL, input=FRANCE, max_output_tokens=16, temperature=0, tools=TOOLS[:1], store=True
    )
    body = json.loads(raw.http_response.text)
    parsed = check(body, Response)
    assert parsed.temperature == 0 and parsed.top_p is not None and 0 < parsed.top_p <= 1
    assert (body["presence_penalty"], body["top_logprobs"], body["service_tier"]) == (0, 0, "default")
    assert body["tools"][0]["strict"] is False and body["reasoning"] is None
    check(http.get(f"{RESPONSES}/{body['id']}").json(), Response)
    for fields in ({"input": FRANCE}, {"input": ASK, "tools": TOOLS, "tool_choice": "required"}):
        events = stream_events(http, max_output_tokens=16, **fields)
        for event in events:
            check_event(event)
        assert events[-1]["type"] in ("response.completed", "response.incomplete")


def test_get_returns_the_stored_response(http: httpx.Client, client: openai.OpenAI) -> None:
    created = post(http, metadata={"k": "v"})
    assert created.status_code == 200, created.text
    body = created.json()
    fetched = http.get(f"{RESPONSES}/{body['id']}")
    assert fetched.status_code == 200, fetched.text
    assert fetched.json() == body
    assert client.responses.retrieve(body["id"]).output_text == body["output"][0]["content"][0]["text"]


def test_a_streamed_response_is_stored_by_its_last_event(http: httpx.Client, client: openai.OpenAI) -> None:
    """A client that chains as soon as the stream ends finds the response stored."""
    final = stream_events(http, input=FRANCE)[-1]["response"]
    assert http.get(f"{RESPONSES}/{final['id']}").json() == final
    chained = respond(client, "And of Germany?", previous_response_id=final["id"])
    assert chained.status == "completed" and chained.previous_response_id == final["id"]


def test_delete_then_404_everywhere(http: httpx.Client, client: openai.OpenAI) -> None:
    response_id = respond(client, max_output_tokens=16).id
    deleted = http.delete(f"{RESPONSES}/{response_id}")
    assert deleted.status_code == 200, deleted.text
    assert deleted.json() == {"id": response_id, "object": "response", "deleted": True}
    for method, path in [("GET", ""), ("DELETE", ""), ("GET", "/input_items")]:
        error = envelope(http.request(method, f"{RESPONSES}/{response_id}{path}"), 404)
        assert error["param"] == "response_id", (method, path)
    error = envelope(post(http, previous_response_id=response_id), 400)
    assert (error["code"], error["param"]) == ("previous_response_not_found", "previous_response_id")
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response_id)


def test_store_false_keeps_nothing(http: httpx.Client, client: openai.OpenAI) -> None:
    answer = respond(client, store=False, max_output_tokens=16)
    assert answer.to_dict()["store"] is False and answer.status in ("completed", "incomplete")
    assert envelope(http.get(f"{RESPONSES}/{answer.id}"), 404)["param"] == "response_id"
    assert envelope(http.get(f"{RESPONSES}/{answer.id}/input_items"), 404)["param"] == "response_id"
    error = envelope(post(http, previous_response_id=answer.id), 400)
    assert (error["code"], error["param"]) == ("previous_response_not_found", "previous_response_id")


def test_chain_is_transitive_and_earlier_instructions_stay_behind(client: openai.OpenAI) -> None:
    turns = ["My favourite colour is blue.", "What is my favourite colour?", "Say it once more."]
    first = respond(client, turns[0], instructions="You are a poet.", max_output_tokens=20)
    second = respond(client, turns[1], previous_response_id=first.id, max_output_tokens=20)
    third = respond(client, turns[2], previous_response_id=second.id, instructions="Be brief.", max_output_tokens=20)
    assert (second.previous_response_id, third.previous_response_id) == (first.id, second.id)
    assert (second.instructions, third.instructions) == (None, "Be brief.")
    history = [
        {"role": "user", "content": turns[0]},
        {"role": "assistant", "content": message_text(first)},
        {"role": "user", "content": turns[1]},
    ]
    assert_same_run(second, chat(client, history, max_tokens=20))
    history += [{"role": "assistant", "content": message_text(second)}, {"role": "user", "content": turns[2]}]
    assert_same_run(third, chat(client, [{"role": "system", "content": "Be brief."}, *history], max_tokens=20))


def test_input_items_list_and_pagination(http: httpx.Client, client: openai.OpenAI) -> None:
    texts = ["One.", "Two.", "Three."]
    items = [{"role": role, "content": text} for role, text in zip(["user", "assistant", "user"], texts, strict=True)]
    response_id = respond(client, items, max_output_tokens=16).id
    newest_first = http.get(f"{RESPONSES}/{response_id}/input_items")
    assert newest_first.status_code == 200, newest_first.text
    page = newest_first.json()
    assert page["object"] == "list" and page["has_more"] is False
    data = page["data"]
    assert [item["content"][0]["text"] for item in data] == texts[::-1]  # default order: desc
    assert [(item["type"], item["role"]) for item in data] == [
        ("message", "user"),
        ("message", "assistant"),
        ("message", "user"),
    ]
    assert [item["content"][0]["type"] for item in data] == ["input_text", "output_text", "input_text"]
    ids = [item["id"] for item in data]
    assert all(ids) and len(set(ids)) == 3 and (page["first_id"], page["last_id"]) == (ids[0], ids[-1])
    asc = http.get(f"{RESPONSES}/{response_id}/input_items", params={"order": "asc", "limit": 2}).json()
    assert [item["id"] for item in asc["data"]] == ids[::-1][:2] and asc["has_more"] is True
    rest = http.get(
        f"{RESPONSES}/{response_id}/input_items", params={"order": "asc", "limit": 2, "after": asc["last_id"]}
    ).json()
    assert [item["id"] for item in rest["data"]] == [ids[0]] and rest["has_more"] is False
    walked = [item.id for item in client.responses.input_items.list(response_id, limit=1, order="asc")]
    assert walked == ids[::-1]  # the SDK's cursor pages, one item at a time


@pytest.mark.parametrize(
    ("query", "param"),
    [({"limit": 0}, "limit"), ({"limit": 101}, "limit"), ({"limit": "many"}, "limit"), ({"order": "up"}, "order")],
)
def test_input_items_bad_query_is_400(http: httpx.Client, paris: Response, query: dict[str, Any], param: str) -> None:
    assert envelope(http.get(f"{RESPONSES}/{paris.id}/input_items", params=query), 400)["param"] == param


# --- background ----------------------------------------------------------------------------------------------


def poll(client: openai.OpenAI, response_id: str, timeout: float = 120) -> Response:
    """The response once it is no longer queued or in progress."""
    latest: list[Response] = []

    def finished() -> bool:
        latest[:] = [client.responses.retrieve(response_id)]
        return latest[0].status not in ("queued", "in_progress")

    wait_for(finished, timeout, f"background response {response_id} to finish", interval=0.5)
    return latest[0]


def test_background_runs_without_its_client(server: Server, client: openai.OpenAI) -> None:
    """The POST returns at once (its client then goes away); the work goes on and GET shows it through."""
    with httpx.Client(base_url=server.base_url, headers={"Authorization": f"Bearer {server.api_key}"}) as gone:
        started = time.monotonic()
        queued = gone.post(
            RESPONSES,
            json={"model": CHAT_MODEL, "input": STORY, "max_output_tokens": 80, "temperature": 0, "background": True},
        )
        answered = time.monotonic() - started
    assert queued.status_code == 200, queued.text
    body = queued.json()
    assert body["status"] in ("queued", "in_progress") and body["background"] is True and body["output"] == []
    assert body["id"].startswith("resp_") and answered < 5, answered
    final = poll(client, body["id"])
    assert final.status in ("completed", "incomplete") and final.background is True
    assert message_text(final) and final.usage is not None and final.usage.output_tokens > 0
    oracle = chat(client, [{"role": "user", "content": STORY}], max_tokens=80)
    assert_same_run(final, oracle)


def test_background_cancel_aborts_the_engine_request(server: Server, client: openai.OpenAI) -> None:
    wait_engine_idle(server, CHAT_MODEL, timeout=60)
    queued = client.responses.create(model=CHAT_MODEL, **endless_response(background=True))
    wait_for(lambda: engine_running(server.base_url, CHAT_MODEL) == 1, 30, "the background response in the engine")
    assert client.responses.retrieve(queued.id).status == "in_progress"
    cancelled = client.responses.cancel(queued.id)
    assert (cancelled.id, cancelled.status) == (queued.id, "cancelled")
    freed = wait_engine_idle(server, CHAT_MODEL, timeout=ABORT_WITHIN)
    print(f"\nbackground cancel: engine request freed {freed:.2f} s after the cancel")
    assert client.responses.retrieve(queued.id).status == "cancelled"


def test_cancel_is_refused_for_finished_and_foreground_responses(
    http: httpx.Client, client: openai.OpenAI, paris: Response
) -> None:
    done = poll(
        client, client.responses.create(model=CHAT_MODEL, input=FRANCE, max_output_tokens=16, background=True).id
    )
    assert done.status in ("completed", "incomplete")
    for response_id in (done.id, paris.id):
        envelope(http.post(f"{RESPONSES}/{response_id}/cancel"), 400)
    assert client.responses.retrieve(done.id).status == done.status


def test_background_needs_store(http: httpx.Client) -> None:
    error = envelope(post(http, background=True, store=False), 400)
    assert "background" in error["message"] and "store" in error["message"]


# --- errors --------------------------------------------------------------------------------------------------

ID_PATHS = [("GET", ""), ("DELETE", ""), ("GET", "/input_items"), ("POST", "/cancel")]


@pytest.mark.parametrize(("method", "path"), ID_PATHS)
@pytest.mark.parametrize("known", [True, False], ids=["stored", "unknown"])
def test_bad_key_is_401_before_any_lookup(
    server: Server, http: httpx.Client, paris: Response, method: str, path: str, known: bool
) -> None:
    response_id = paris.id if known else "resp_unknown0000"
    url = f"{server.base_url}{RESPONSES}/{response_id}{path}"
    for headers in ({}, {"Authorization": "Bearer sk-wrong-key-0000"}):
        error = envelope(httpx.request(method, url, headers=headers, timeout=30), 401)
        assert error["code"] == "invalid_api_key"
    assert http.get(f"{RESPONSES}/{paris.id}").status_code == 200  # a refused DELETE deleted nothing


def test_bad_key_is_401_on_create(server: Server) -> None:
    bad = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="sk-wrong-key-0000", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.responses.create(model=CHAT_MODEL, input=FRANCE, max_output_tokens=16)


@pytest.mark.parametrize("stream", [False, True])
def test_unknown_model_is_404(client: openai.OpenAI, stream: bool) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.responses.create(model="no-such-model", input=FRANCE, max_output_tokens=16, stream=stream)
    assert info.value.code == "model_not_found" and info.value.param == "model"


@pytest.mark.parametrize(("method", "path"), ID_PATHS)
def test_unknown_response_is_404(http: httpx.Client, method: str, path: str) -> None:
    error = envelope(http.request(method, f"{RESPONSES}/resp_nothing_here{path}"), 404)
    assert error["param"] == "response_id"
    assert error["message"] == "Response with id 'resp_nothing_here' not found."


# The expected ``param``; every one of these is a 400, never a 422 or a 500.
BAD: list[tuple[str, dict[str, Any], str]] = [
    ("model-missing", {"model": None}, "model"),
    ("input-missing", {"input": None}, "input"),
    ("input-empty", {"input": []}, "input"),
    ("input-number", {"input": 12}, "input"),
    ("role", {"input": [{"role": SENTINEL, "content": "hi"}]}, "input"),
    ("item-type", {"input": [{"type": SENTINEL, "role": "user", "content": "hi"}]}, "input"),
    ("function_call-without-call_id", {"input": [{"type": "function_call", "name": "f", "arguments": "{}"}]}, "input"),
    ("function_call_output-without-output", {"input": [{"type": "function_call_output", "call_id": "c"}]}, "input"),
    (
        "image-part",
        {"input": [{"role": "user", "content": [{"type": "input_image", "image_url": SENTINEL}]}]},
        "input",
    ),
    ("max_output_tokens-15", {"max_output_tokens": 15}, "max_output_tokens"),
    ("max_output_tokens-0", {"max_output_tokens": 0}, "max_output_tokens"),
    ("temperature-3", {"temperature": 3}, "temperature"),
    ("temperature-string", {"temperature": SENTINEL}, "temperature"),
    ("top_p-1.5", {"top_p": 1.5}, "top_p"),
    ("format-type", {"text": {"format": {"type": SENTINEL}}}, "text"),
    ("json_schema-without-schema", {"text": {"format": {"type": "json_schema", "name": "x"}}}, "text"),
    (
        "json_schema-bad-schema",
        {"text": {"format": {"type": "json_schema", "name": "x", "schema": {"type": 12}}}},
        "text",
    ),
    ("tools-chat-shaped", {"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
    ("tools-not-function", {"tools": [{"type": "web_search"}]}, "tools"),
    ("tools-bad-name", {"tools": [{"type": "function", "name": "has spaces"}]}, "tools"),
    ("tools-duplicate", {"tools": [WEATHER, WEATHER]}, "tools"),
    ("tools-bad-parameters", {"tools": [{"type": "function", "name": "f", "parameters": {"type": 12}}]}, "tools"),
    (
        "tool_choice-not-in-tools",
        {"tools": TOOLS, "tool_choice": {"type": "function", "name": "no_such_tool"}},
        "tool_choice",
    ),
    ("tool_choice-required-without-tools", {"tool_choice": "required"}, "tool_choice"),
    ("tool_choice-string", {"tools": TOOLS, "tool_choice": SENTINEL}, "tool_choice"),
    ("metadata-not-strings", {"metadata": {"a": 1}}, "metadata"),
    ("metadata-17-keys", {"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata"),
    ("store-string", {"store": SENTINEL}, "store"),
    ("stream-string", {"stream": SENTINEL}, "stream"),
    ("previous_response_id-unknown", {"previous_response_id": "resp_no_such_response"}, "previous_response_id"),
    ("context-overflow", {"input": "hello " * 3000}, "input"),
]


@pytest.mark.parametrize(("fields", "param"), [case[1:] for case in BAD], ids=[case[0] for case in BAD])
def test_bad_request_is_400_with_param(http: httpx.Client, fields: dict[str, Any], param: str) -> None:
    body = {"model": CHAT_MODEL, "input": f"Say hi. {SENTINEL}", "max_output_tokens": 16, **fields}
    response = http.post(RESPONSES, json={key: value for key, value in body.items() if value is not None})
    error = envelope(response, 400)
    assert error["param"] is not None and error["param"].startswith(param), error
    assert error["type"] == "invalid_request_error"
    assert SENTINEL not in response.text


def test_context_overflow_and_unknown_previous_response_codes(http: httpx.Client) -> None:
    error = envelope(post(http, input="hello " * 3000), 400)
    assert (error["code"], error["param"]) == ("context_length_exceeded", "input")
    error = envelope(post(http, previous_response_id="resp_nothing_here"), 400)
    assert (error["code"], error["param"]) == ("previous_response_not_found", "previous_response_id")


# --- privacy -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def other_http(server: Server, other_key: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, headers={"Authorization": f"Bearer {other_key}"}, timeout=120) as s:
        yield s


def test_another_key_sees_nothing(
    server: Server, client: openai.OpenAI, other_client: openai.OpenAI, other_http: httpx.Client
) -> None:
    """Another key gets what an unknown id gets, everywhere; the owner's response, and its run, are untouched."""
    wait_engine_idle(server, CHAT_MODEL, timeout=60)
    running = client.responses.create(model=CHAT_MODEL, **endless_response(background=True))
    stored = respond(client, max_output_tokens=16)
    try:
        for response_id in (stored.id, running.id):
            for method, path in ID_PATHS:
                error = envelope(other_http.request(method, f"{RESPONSES}/{response_id}{path}"), 404)
                assert error["message"] == f"Response with id '{response_id}' not found.", (method, path)
            error = envelope(post(other_http, previous_response_id=response_id), 400)
            assert (error["code"], error["param"]) == ("previous_response_not_found", "previous_response_id")
        with pytest.raises(openai.NotFoundError):
            other_client.responses.retrieve(stored.id)
        assert client.responses.retrieve(stored.id).to_dict() == stored.to_dict()
        assert client.responses.retrieve(running.id).status in ("queued", "in_progress")
        assert other_client.responses.create(model=CHAT_MODEL, input=FRANCE, max_output_tokens=16).status
    finally:
        client.responses.cancel(running.id)
    wait_engine_idle(server, CHAT_MODEL, timeout=ABORT_WITHIN)


# --- the benchmark's harness, at tiny size (so it cannot rot) -----------------------------------------------


async def test_benchmark_measures_both_endpoints(aclient: openai.AsyncOpenAI) -> None:
    from benchmarks import responses as bench

    comparisons = await bench.compare(aclient, CHAT_MODEL, levels=[2], rounds=1, requests=2, max_tokens=16)
    [level] = comparisons
    assert level.concurrency == 2 and len(level.ratios) == 1
    for stats in (level.chat, level.responses):
        assert stats.errors == 0, stats.first_error
        assert stats.requests == 2 and stats.usage_reported and stats.output_tokens_per_s > 0
    assert level.chat.tokens_per_request == 16  # ignore_eos
    assert level.ratio == level.responses.output_tokens_per_s / level.chat.output_tokens_per_s
    assert "| 2 |" in bench.render(comparisons)
