"""Our Response objects and stream events against the official SDK's types, field by field (``tests/schema_check``):
plain, streamed, tool calls, reasoning, incomplete, background, cancelled, failed and read back; the sampling
values echoed as used; the newer request fields checked and echoed; ``truncation: auto``."""

from __future__ import annotations

import asyncio
import copy
from pathlib import Path
from typing import Any

import pytest
from openai.types.responses import Response

from openai_routes.core.engine import ModelCapabilities, OutputEvent
from tests.schema_check import check, check_event
from tests.unit.fakes import CHAT_MODEL, FakeGenerateEngine
from tests.unit.test_responses import Harness, Script, create, error_of, events, first_step, h, serve

__all__ = ["h"]  # the fixture, imported for the tests here

TOOLS = [{"type": "function", "name": "f", "parameters": {"type": "object"}}, {"type": "function", "name": "g",
          "strict": True}]  # fmt: skip


async def stream(h: Harness, **fields: Any) -> list[dict[str, Any]]:
    """Every event of a streamed create, each checked against its event type; the terminal response too."""
    body = {"model": CHAT_MODEL, "input": "Hi", "stream": True, **fields}
    payloads = [payload for _, payload in events(await h.client.post("/responses", json=body))]
    for payload in payloads:
        check_event(payload)
    return payloads


def scripted(h: Harness, script: list[list[OutputEvent]]) -> None:
    """The engine's next replies read as ``script`` says (one event list per generated piece)."""
    h.generator.reply = lambda _p, _c: ["x"] * len(script)
    h.generator.output_reader = lambda *_: Script(copy.deepcopy(script))  # type: ignore[method-assign,assignment]


async def test_the_check_fails_on_a_missing_or_wrong_field(h: Harness) -> None:
    body = check(await create(h), Response).model_dump(mode="json", by_alias=True)
    for drop in (("service_tier",), ("usage", "input_tokens_details", "cache_write_tokens"), ("output", 0, "phase")):
        broken = copy.deepcopy(body)
        parent: Any = broken
        for key in drop[:-1]:
            parent = parent[key]
        del parent[drop[-1]]
        with pytest.raises(AssertionError, match=str(drop[-1])):
            check(broken, Response)
    with pytest.raises(ValueError):  # pydantic's ValidationError: a value of the wrong type
        check({**body, "error": {**STOPPED_ERROR, "code": "no_such_code"}}, Response)
    with pytest.raises(AssertionError):
        check_event({"type": "response.output_text.delta", "delta": "x", "item_id": "m", "output_index": 0,
                     "content_index": 0, "sequence_number": 0})  # fmt: skip


STOPPED_ERROR = {"code": "server_error", "message": "m", "param": None, "type": None, "misalignment": None}


async def test_a_plain_response_has_every_field_and_the_values_used(h: Harness) -> None:
    body = await create(h)
    check(body, Response)
    assert (body["temperature"], body["top_p"], body["presence_penalty"], body["frequency_penalty"]) == (1, 1, 0, 0)
    assert (body["top_logprobs"], body["service_tier"], body["truncation"]) == (0, "default", "disabled")
    assert body["reasoning"] is body["safety_identifier"] is body["prompt_cache_key"] is body["conversation"] is None
    assert body["text"] == {"format": {"type": "text"}, "verbosity": None}
    assert check(await create(h, temperature=0.2, top_p=0.5, presence_penalty=1.5), Response).temperature == 0.2
    options = h.generator.calls[-1].options
    assert (options.temperature, options.top_p, options.presence_penalty) == (0.2, 0.5, 1.5)


async def test_the_model_generation_defaults_are_echoed_when_the_request_leaves_them(tmp_path: Path) -> None:
    defaults = {"temperature": 0.6, "top_p": 0.9, "frequency_penalty": 0.5}
    generator = FakeGenerateEngine(context=512, capabilities=ModelCapabilities(sampling_defaults=defaults))
    async with serve(tmp_path, generator) as h:
        body = check(await create(h, top_p=0.3), Response).model_dump()  # the penalties are extras to the SDK
        assert (body["temperature"], body["top_p"], body["frequency_penalty"], body["presence_penalty"]) == (
            0.6, 0.3, 0.5, 0.0)  # fmt: skip


async def test_every_event_of_a_stream_has_every_field(h: Harness) -> None:
    payloads = await stream(h, instructions="Be brief.", metadata={"k": "v"})
    kinds = [payload["type"] for payload in payloads]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert payloads[-1]["response"] == (await h.client.get(f"/responses/{payloads[-1]['response']['id']}")).json()


async def test_tool_calls_and_echoed_tools_have_every_field(h: Harness) -> None:
    call = [[OutputEvent("call", "f", 0)], [OutputEvent("arguments", '{"a": ', 0)], [OutputEvent("arguments", "1}", 0)]]
    scripted(h, call)
    body = await create(h, tools=TOOLS, tool_choice={"type": "function", "name": "f"})
    parsed = check(body, Response)
    [call] = body["output"]
    assert call["type"] == "function_call" and call["arguments"] == '{"a": 1}' and call["async"] is None
    assert [tool["strict"] for tool in body["tools"]] == [False, True]  # not enforced unless asked: see protocol
    assert parsed.tool_choice.type == "function"  # type: ignore[union-attr]
    scripted(h, [[OutputEvent("call", "f", 0)], [OutputEvent("arguments", "{}", 0)], []])
    kinds = [payload["type"] for payload in await stream(h, tools=TOOLS)]
    assert "response.function_call_arguments.done" in kinds


async def test_reasoning_items_have_every_field(h: Harness) -> None:
    h.generator.capabilities = ModelCapabilities(reasoning_parser=True)
    scripted(h, [[OutputEvent("reasoning", "think")], [OutputEvent("text", "Hi")], []])
    body = await create(h)
    assert [item["type"] for item in check(body, Response).model_dump()["output"]] == ["reasoning", "message"]
    assert body["output"][0]["encrypted_content"] is None
    scripted(h, [[OutputEvent("reasoning", "think")], [OutputEvent("text", "Hi")], []])
    await stream(h)


async def test_an_incomplete_response_has_every_field(h: Harness) -> None:
    h.generator.reply = lambda _p, _c: ["word"] * 40
    assert check(await create(h, max_output_tokens=16), Response).status == "incomplete"
    assert (await stream(h, max_output_tokens=16))[-1]["type"] == "response.incomplete"


async def test_background_cancelled_failed_and_stored_responses_have_every_field(tmp_path: Path) -> None:
    generator = FakeGenerateEngine(context=512, hold=asyncio.Event())
    async with serve(tmp_path, generator) as h:
        queued = check(await create(h, background=True), Response)
        await first_step(generator)
        cancelled = await h.client.post(f"/responses/{queued.id}/cancel")
        assert check(cancelled.json(), Response).status == "cancelled"
        assert check((await h.client.get(f"/responses/{queued.id}")).json(), Response).status == "cancelled"
        generator.hold.set()  # type: ignore[union-attr]
        generator.hold = asyncio.Event()
        running = await create(h, background=True)
        await first_step(generator, nth=2)
    async with serve(tmp_path) as h:  # the service stopped under it: failed
        failed = check((await h.client.get(f"/responses/{running['id']}")).json(), Response)
        assert failed.status == "failed" and failed.error is not None and failed.error.code == "server_error"
        stored = await create(h)
        assert check((await h.client.get(f"/responses/{stored['id']}")).json(), Response).status == "completed"


NEWER = {
    "prompt_cache_key": "k",
    "safety_identifier": "user-1",
    "text": {"verbosity": "low"},
    "reasoning": {"effort": "low", "summary": "auto"},
    "include": ["message.output_text.logprobs"],
    "truncation": "auto",
    "max_tool_calls": 3,
    "top_logprobs": 2,
    "service_tier": "flex",
}


async def test_the_newer_request_fields_are_echoed(h: Harness) -> None:
    body = check(await create(h, **NEWER), Response)
    assert (body.prompt_cache_key, body.safety_identifier, body.max_tool_calls, body.top_logprobs) == (
        "k",
        "user-1",
        3,
        2,
    )
    assert body.text is not None and body.text.verbosity == "low" and body.truncation == "auto"
    assert body.reasoning is not None and (body.reasoning.effort, body.reasoning.summary) == ("low", "auto")
    assert body.service_tier == "default"  # the tier it ran in: the only one here


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"top_logprobs": 21}, "top_logprobs"),
        ({"truncation": "sometimes"}, "truncation"),
        ({"reasoning": {"effort": "huge"}}, "reasoning.effort"),
        ({"service_tier": "gold"}, "service_tier"),
        ({"safety_identifier": "x" * 129}, "safety_identifier"),
        ({"include": ["everything"]}, "include[0]"),
        ({"text": {"verbosity": "loud"}}, "text.verbosity"),
        ({"max_tool_calls": -1}, "max_tool_calls"),
        ({"presence_penalty": 2.5}, "presence_penalty"),
    ],
)
async def test_bad_newer_fields_are_400_with_param(h: Harness, fields: dict[str, Any], param: str) -> None:
    response = await h.client.post("/responses", json={"model": CHAT_MODEL, "input": "Hi", **fields})
    assert error_of(response, 400)["param"] == param


def turns(*contents: str) -> list[dict[str, Any]]:
    return [{"role": "user" if i % 2 == 0 else "assistant", "content": text} for i, text in enumerate(contents)]


async def test_truncation_auto_drops_the_oldest_items_until_the_prompt_fits(tmp_path: Path) -> None:
    async with serve(tmp_path, FakeGenerateEngine(context=200)) as h:
        items = turns("a" * 60, "b" * 60, "c" * 60, "d" * 20, "e" * 20)
        refused = await h.client.post("/responses", json={"model": CHAT_MODEL, "input": items, "instructions": "S"})
        assert error_of(refused, 400)["code"] == "context_length_exceeded"
        body = check(await create(h, input=items, instructions="S", truncation="auto"), Response)
        kept = h.generator.rendered[-1]
        assert kept[0] == {"role": "system", "content": "S"} and [m["content"][0] for m in kept[1:]] == list("bcde")
        assert body.usage is not None and body.usage.input_tokens < 200 and body.truncation == "auto"
        fields = {"model": CHAT_MODEL, "input": items, "instructions": "S", "truncation": "auto"}
        counted = await h.client.post("/responses/input_tokens", json=fields)
        assert counted.json()["input_tokens"] == body.usage.input_tokens
        alone = turns("a" * 60, "b" * 60, "c" * 250)
        too_long = await h.client.post("/responses", json={"model": CHAT_MODEL, "input": alone, "truncation": "auto"})
        assert error_of(too_long, 400)["code"] == "context_length_exceeded"  # the newest user turn is never dropped


async def test_truncation_never_leaves_a_function_output_without_its_call(tmp_path: Path) -> None:
    async with serve(tmp_path, FakeGenerateEngine(context=200)) as h:
        items = [
            {"role": "user", "content": "a" * 100},
            {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "o" * 30},
            {"role": "user", "content": "q" * 40},
        ]
        await create(h, input=items, truncation="auto")
        assert [m["role"] for m in h.generator.rendered[-1]] in (["assistant", "tool", "user"], ["user"])
