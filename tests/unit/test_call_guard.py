"""The loop guard for tool calls (``pipeline.call_guard``): a choice that repeats one of its calls ends there.

The guard alone on events, then vLLM's real parsers reading a looping model's output through the routes (a fake
engine plays the text back): chat and Responses, streamed and not, the engine request stopped at the repeat.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from engines.vllm_output import ModelParsers
from openai_routes.core.engine import OutputEvent
from openai_routes.pipeline.call_guard import CallGuard
from openai_routes.pipeline.choice import ChoiceOutput
from tests.unit.fakes import CHAT_MODEL, FakeGenerateEngine
from tests.unit.test_output_parsers import WEATHER, deltas, tokenizer
from tests.unit.test_routes import serve, sse_events

USER = [{"role": "user", "content": "Weather in Paris?"}]


def call(city: str, spacing: str = " ") -> str:
    return f'{{"name":{spacing}"get_weather",{spacing}"parameters":{spacing}{{"city":{spacing}"{city}"}}}}'


LOOP = "[" + ", ".join(call(city) for city in ["Paris", "Rome", "Paris", "Oslo", "Paris"]) + "]"
DISTINCT = '[{"city": "Paris"}, {"city": "Rome"}]'


def test_a_repeat_ends_the_choice_and_is_dropped() -> None:
    guard = CallGuard()
    first = guard.read([OutputEvent("call", "f", 0), OutputEvent("arguments", '{"a": 1}', 0)], False)
    assert len(first) == 2  # the first call passes as it comes
    assert guard.read([OutputEvent("call", "f", 1), OutputEvent("arguments", '{"a":', 1)], False) == []  # held
    released = guard.read([OutputEvent("arguments", " 2}", 1)], False)  # complete and new: released
    assert [event.text for event in released] == ["f", '{"a":', " 2}"] and not guard.ended
    assert guard.read([OutputEvent("call", "f", 2), OutputEvent("arguments", '{ "a" : 1 }', 2)], False) == []
    assert guard.ended
    assert guard.read([OutputEvent("text", "more"), OutputEvent("call", "g", 3)], True) == []


def test_argument_equivalent_json_is_a_repeat() -> None:
    guard = CallGuard()
    guard.read([OutputEvent("call", "f", 0), OutputEvent("arguments", '{"a": 1, "b": [1, 2]}', 0)], False)
    assert guard.read([OutputEvent("call", "f", 1), OutputEvent("arguments", '{"b":[1,2],"a":1}', 1)], False) == []
    assert guard.ended


def test_same_arguments_of_another_tool_or_another_value_are_no_repeat() -> None:
    guard = CallGuard()
    guard.read([OutputEvent("call", "f", 0), OutputEvent("arguments", '{"a": 1}', 0)], False)
    assert len(guard.read([OutputEvent("call", "g", 1), OutputEvent("arguments", '{"a": 1}', 1)], False)) == 2
    assert len(guard.read([OutputEvent("call", "f", 2), OutputEvent("arguments", '{"a": "1"}', 2)], False)) == 2
    assert not guard.ended


def test_a_held_call_cut_off_at_the_end_is_released() -> None:
    """Arguments that never parse are no repeat: the call goes on (the answer is the raw text then, as before)."""
    guard = CallGuard()
    guard.read([OutputEvent("call", "f", 0), OutputEvent("arguments", '{"a": 1}', 0)], False)
    assert guard.read([OutputEvent("call", "f", 1), OutputEvent("arguments", '{"a": ', 1)], False) == []
    assert len(guard.read([], True)) == 2 and not guard.ended


@pytest.fixture(scope="module")
def generic() -> ModelParsers:
    return ModelParsers(tokenizer(), None, None)


def test_generic_auto_calls_with_other_spacing_are_a_repeat(generic: ModelParsers) -> None:
    """The generic format read by vLLM's hermes parser: the second call differs only in spacing and key order."""
    output = (
        '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris", "unit": "c"}}</tool_call>\n'
        '<tool_call>{"name":"get_weather","arguments":{"unit":"c","city":"Paris"}}</tool_call>\n'
        '<tool_call>{"name": "get_weather", "arguments": {"city": "Rome"}}</tool_call>'
    )
    choice = ChoiceOutput(generic.reader([WEATHER], "auto", [1]))
    for delta in deltas(tokenizer(), output):
        choice.feed(delta)
        if choice.ended:
            break
    assert choice.ended and choice.finish_reason == "stop"
    result = choice.output()
    assert result.finish_reason == "tool_calls" and [c.arguments for c in result.calls] == [
        '{"city": "Paris", "unit": "c"}'
    ]


class LoopingEngine(FakeGenerateEngine):
    """The fake engine playing ``output`` back token by token (the default model's tokens), read by vLLM's real
    generic parsers."""

    def __init__(self, parsers: ModelParsers, output: str = LOOP) -> None:
        pieces = [delta.text for delta in deltas(tokenizer(), output)]
        super().__init__(reply=lambda _prompt, _choice: pieces, context=4096)
        self.pieces = pieces
        self.parsers = parsers

    def output_reader(self, tools: Any, tool_choice: Any, prompt_token_ids: Any) -> Any:
        return self.parsers.reader(tools, tool_choice, prompt_token_ids)


def chat_body(stream: bool, **fields: Any) -> dict[str, Any]:
    body = {"model": CHAT_MODEL, "messages": USER, "tools": [WEATHER], "tool_choice": "required", **fields}
    return {**body, "stream": True, "stream_options": {"include_usage": True}} if stream else body


def streamed_chat(chunks: list[Any]) -> tuple[list[tuple[str, str]], list[str], dict[str, Any]]:
    calls: dict[int, list[str]] = {}
    finishes = []
    for chunk in chunks[:-1]:  # the last is [DONE]
        for choice in chunk["choices"]:
            finishes += [choice["finish_reason"]] if choice["finish_reason"] else []
            for delta in choice["delta"].get("tool_calls") or []:
                name = delta["function"].get("name") or ""
                pieces = calls.setdefault(delta["index"], ["", ""])
                pieces[0] += name
                pieces[1] += delta["function"].get("arguments") or ""
    return [(name, arguments) for name, arguments in calls.values()], finishes, chunks[-2]["usage"]


async def test_chat_ends_at_the_repeat_streamed_or_not(generic: ModelParsers) -> None:
    engine = LoopingEngine(generic)
    async with serve(engine) as h:
        whole = (await h.client.post("/chat/completions", json=chat_body(False))).json()
        streamed = sse_events(await h.client.post("/chat/completions", json=chat_body(True)))
    choice = whole["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    calls = [(c["function"]["name"], c["function"]["arguments"]) for c in choice["message"]["tool_calls"]]
    assert [json.loads(arguments) for _, arguments in calls] == json.loads(DISTINCT)
    # the engine request stopped at the repeat (the third call's arguments), its tokens counted, no more
    stopped_at = len(deltas(tokenizer(), LOOP[: LOOP.index(call("Oslo")) - 3]))
    assert [(c.outcome, c.steps) for c in engine.calls] == [("closed", stopped_at)] * 2
    assert whole["usage"]["completion_tokens"] == stopped_at < len(engine.pieces)
    assert streamed_chat(streamed) == (calls, ["tool_calls"], whole["usage"])


async def test_distinct_calls_run_to_the_end(generic: ModelParsers) -> None:
    output = "[" + ", ".join(call(city) for city in ["Paris", "Rome", "Oslo"]) + "]"
    async with serve(LoopingEngine(generic, output)) as h:
        whole = (await h.client.post("/chat/completions", json=chat_body(False))).json()
        assert [c.outcome for c in h.generator.calls] == ["finished"]
    cities = [json.loads(c["function"]["arguments"])["city"] for c in whole["choices"][0]["message"]["tool_calls"]]
    assert cities == ["Paris", "Rome", "Oslo"] and whole["choices"][0]["finish_reason"] == "tool_calls"


async def test_a_single_call_is_unchanged(generic: ModelParsers) -> None:
    """``parallel_tool_calls: false`` keeps the first call only, as before: no later call reaches the guard."""
    engine = LoopingEngine(generic)
    async with serve(engine) as h:
        whole = (await h.client.post("/chat/completions", json=chat_body(False, parallel_tool_calls=False))).json()
        assert [c.outcome for c in h.generator.calls] == ["finished"]
    calls = whole["choices"][0]["message"]["tool_calls"]
    assert [json.loads(c["function"]["arguments"]) for c in calls] == [{"city": "Paris"}]
    assert whole["choices"][0]["finish_reason"] == "tool_calls"
    assert whole["usage"]["completion_tokens"] == len(engine.pieces)


async def test_responses_complete_at_the_repeat_streamed_or_not(generic: ModelParsers) -> None:
    tool = {"type": "function", **WEATHER["function"]}
    body = {
        "model": CHAT_MODEL,
        "input": "Weather in Paris?",
        "tools": [tool],
        "tool_choice": "required",
        "store": False,
    }
    engine = LoopingEngine(generic)
    async with serve(engine) as h:
        whole = (await h.client.post("/responses", json=body)).json()
        stream = await h.client.post("/responses", json={**body, "stream": True})
        assert [c.outcome for c in h.generator.calls] == ["closed", "closed"]
    assert whole["status"] == "completed" and whole["incomplete_details"] is None
    items = [(item["type"], item["name"], item["arguments"], item["status"]) for item in whole["output"]]
    assert items == [("function_call", "get_weather", json.dumps(a), "completed") for a in json.loads(DISTINCT)]
    events = [json.loads(line[6:]) for line in stream.text.split("\n") if line.startswith("data: ")]
    assert events[-1]["type"] == "response.completed"
    final = events[-1]["response"]
    assert [(i["type"], i["name"], i["arguments"], i["status"]) for i in final["output"]] == items
    assert final["usage"]["output_tokens"] == whole["usage"]["output_tokens"] < len(engine.pieces)
    added = [event["item"]["name"] for event in events if event["type"] == "response.output_item.added"]
    assert added == ["get_weather", "get_weather"]  # the repeat's events were held back, never sent


@pytest.mark.parametrize(
    "cities", [["Rome"], ["Rome", "Oslo", "Lima", "Bern", "Riga", "Kyiv"]], ids=["shorter", "longer"]
)
async def test_with_n_the_request_stops_once_every_choice_has_ended(generic: ModelParsers, cities: list[str]) -> None:
    """Choice 0 repeats a call, choice 1 ends by itself (before or after): the engine request, which both share,
    stops when both have ended, and choice 0's tokens after its repeat are neither read nor counted."""
    distinct = "[" + ", ".join(call(city) for city in cities) + "]"
    outputs = {
        0: [d.text for d in deltas(tokenizer(), LOOP + LOOP)],
        1: [d.text for d in deltas(tokenizer(), distinct)],
    }
    engine = LoopingEngine(generic)
    engine.reply = lambda _prompt, choice: outputs[choice]
    stopped_at = len(deltas(tokenizer(), LOOP[: LOOP.index(call("Oslo")) - 3]))
    async with serve(engine) as h:
        whole = (await h.client.post("/chat/completions", json=chat_body(False, n=2))).json()
    assert [(c.outcome, c.steps) for c in engine.calls] == [("closed", max(stopped_at, len(outputs[1])))]
    assert [choice["finish_reason"] for choice in whole["choices"]] == ["tool_calls", "tool_calls"]
    assert [len(choice["message"]["tool_calls"]) for choice in whole["choices"]] == [2, len(cities)]
    assert whole["usage"]["completion_tokens"] == stopped_at + len(outputs[1])
