"""A client no one here wrote: the OpenAI Agents SDK (``openai-agents``) runs its agent loop on our ``/v1/responses``.

The 135M model does not choose to call a tool by itself, so the first turn is forced (``tool_choice="required"``);
the SDK's ``reset_tool_choice`` (on by default) then lets the next turn answer in text. The proof that the tool's
output went back is read from the store: the second response's input items hold the ``function_call_output``.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pydantic
import pytest
from agents import (
    Agent,
    FunctionTool,
    MessageOutputItem,
    ModelSettings,
    OpenAIResponsesModel,
    Runner,
    RunResult,
    RunResultStreaming,
    ToolCallItem,
    ToolCallOutputItem,
    function_tool,
    set_tracing_disabled,
)

from tests.e2e.conftest import CHAT_MODEL
from tests.e2e.server import Server

ASK = "What is the weather in Paris?"


@pytest.fixture(scope="module", autouse=True)
def no_tracing() -> Iterator[None]:
    """The SDK would otherwise export traces to OpenAI (and want an OpenAI key for it)."""
    set_tracing_disabled(True)
    yield
    set_tracing_disabled(False)


def model(server: Server) -> OpenAIResponsesModel:
    client = openai.AsyncOpenAI(base_url=f"{server.base_url}/v1", api_key=server.api_key, max_retries=0, timeout=120)
    return OpenAIResponsesModel(model=CHAT_MODEL, openai_client=client)


def weather_agent(server: Server, ran: list[str]) -> Agent[Any]:
    @function_tool
    def get_weather(city: str) -> str:
        """Current weather in a city."""
        ran.append(city)
        return f"Sunny and 21 C in {city}."

    return Agent(
        name="weather",
        instructions="You are a helpful assistant.",
        tools=[get_weather],
        model=model(server),
        model_settings=ModelSettings(tool_choice="required", temperature=0, max_tokens=200),
    )


def check_loop(result: RunResult | RunResultStreaming, ran: list[str], http: httpx.Client) -> list[str]:
    """The tool ran, its output went back in the next request, and the run ended with a text answer (after one
    more call or not: the turns after the first are the model's choice). Returns the turns' response ids."""
    assert ran, "the tool never ran"
    calls = [item for item in result.new_items if isinstance(item, ToolCallItem)]
    outputs = [item for item in result.new_items if isinstance(item, ToolCallOutputItem)]
    assert calls and len(outputs) == len(calls) == len(ran), result.new_items
    call: Any = calls[0].raw_item
    assert call.type == "function_call" and call.name == "get_weather" and call.call_id.startswith("call_")
    assert outputs[0].output == f"Sunny and 21 C in {ran[0]}."
    assert isinstance(result.new_items[-1], MessageOutputItem)
    assert isinstance(result.final_output, str) and result.final_output.strip(), result.final_output
    ids = [response.response_id or "" for response in result.raw_responses]
    assert len(ids) == len(calls) + 1 and all(i.startswith("resp_") for i in ids) and len(set(ids)) == len(ids)
    items = http.get(f"/v1/responses/{ids[1]}/input_items", params={"order": "asc"})
    assert items.status_code == 200, items.text
    sent = [item for item in items.json()["data"] if item["type"] == "function_call_output"]
    assert [(item["call_id"], item["output"]) for item in sent] == [(call.call_id, outputs[0].output)], sent
    return ids


PLAIN_CITY = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


def looping_agent(server: Server, ran: list[str]) -> Agent[Any]:
    """The README's weather tool (a plain schema, not strict), no instructions, forced, parallel calls allowed and
    512 tokens: before the loop guard the 135M model repeated ``get_weather({"city":"Paris"})`` 27 times to the
    limit on this prompt, an ``incomplete`` response the SDK raises on (with ``@function_tool``'s strict schema or
    with instructions it happens to stop after one call)."""

    async def get_weather(_context: Any, arguments: str) -> str:
        city = json.loads(arguments)["city"]
        ran.append(city)
        return f"Sunny and 21 C in {city}."

    tool = FunctionTool(
        name="get_weather",
        description="Current weather in a city.",
        params_json_schema=PLAIN_CITY,
        on_invoke_tool=get_weather,
        strict_json_schema=False,
    )
    settings = ModelSettings(tool_choice="required", temperature=0, max_tokens=512)
    return Agent(name="weather", tools=[tool], model=model(server), model_settings=settings)


def check_untight(result: RunResult | RunResultStreaming, ran: list[str], http: httpx.Client) -> list[str]:
    """The forced turn ended at its calls (distinct ones, each run), and the run reached a text answer: every turn
    ``completed``, none ``incomplete``. Returns the turns' response ids."""
    calls = [item for item in result.new_items if isinstance(item, ToolCallItem)]
    assert calls and len(ran) == len(calls), (calls, ran)
    output: list[Any] = result.raw_responses[0].output
    first_turn = [(item.name, json.loads(item.arguments)) for item in output if item.type == "function_call"]
    assert len({json.dumps(call, sort_keys=True) for call in first_turn}) == len(first_turn), first_turn
    assert isinstance(result.new_items[-1], MessageOutputItem)
    assert isinstance(result.final_output, str) and result.final_output.strip(), result.final_output
    ids = [response.response_id or "" for response in result.raw_responses]
    statuses = [http.get(f"/v1/responses/{response_id}").json()["status"] for response_id in ids]
    assert statuses == ["completed"] * len(ids), statuses
    return ids


async def test_a_forced_tool_with_parallel_calls_completes(server: Server, http: httpx.Client) -> None:
    """Issue 25's done-when: a forced single tool with the Agents SDK completes without ``incomplete`` (the loop
    guard ends the forced turn at the first repeated call)."""
    ran: list[str] = []
    result = await Runner.run(looping_agent(server, ran), ASK, max_turns=4)
    ids = check_untight(result, ran, http)
    sent = http.get(f"/v1/responses/{ids[1]}/input_items", params={"order": "asc"}).json()["data"]
    outputs = [item["output"] for item in sent if item["type"] == "function_call_output"]
    first_turn = [item for item in result.raw_responses[0].output if item.type == "function_call"]
    assert outputs == [f"Sunny and 21 C in {city}." for city in ran[: len(first_turn)]], sent  # the outputs went back


@pytest.mark.stress  # the non-streamed twin stays in make test
async def test_a_forced_tool_with_parallel_calls_completes_streamed(server: Server, http: httpx.Client) -> None:
    ran: list[str] = []
    result = Runner.run_streamed(looping_agent(server, ran), ASK, max_turns=4)
    raw_types = [event.data.type async for event in result.stream_events() if event.type == "raw_response_event"]
    ids = check_untight(result, ran, http)
    assert raw_types.count("response.completed") == len(ids) and "response.incomplete" not in raw_types
    assert "response.function_call_arguments.delta" in raw_types and "response.output_text.delta" in raw_types


async def test_agent_chains_on_the_server(server: Server, http: httpx.Client) -> None:
    """``auto_previous_response_id``: the second turn sends only the tool's output and ``previous_response_id``;
    the server's chain supplies the question and the call."""
    ran: list[str] = []
    result = await Runner.run(weather_agent(server, ran), ASK, max_turns=4, auto_previous_response_id=True)
    ids = check_loop(result, ran, http)
    for previous, response_id in itertools.pairwise(ids):
        assert http.get(f"/v1/responses/{response_id}").json()["previous_response_id"] == previous
        own = http.get(f"/v1/responses/{response_id}/input_items").json()["data"]
        assert [item["type"] for item in own] == ["function_call_output"], own


async def test_agent_structured_output(server: Server) -> None:
    class Cat(pydantic.BaseModel):
        name: str = pydantic.Field(max_length=20)
        age: int

    agent = Agent(
        name="cats",
        instructions="Describe a cat.",
        output_type=Cat,
        model=model(server),
        model_settings=ModelSettings(temperature=0, max_tokens=200),
    )
    result = await Runner.run(agent, "Describe a cat.", max_turns=1)
    assert isinstance(result.final_output, Cat)
