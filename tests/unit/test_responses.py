"""The Responses routes through ``create_app`` with a scripted engine and a real SQLite store (no vLLM, no server):
the wire shapes, the event sequence, chaining, privacy by key, background runs and the errors."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from openai_routes.core.engine import OutputDelta, OutputEvent
from openai_routes.core.limits import Limits
from openai_routes.endpoints.responses.items import FunctionToolCall, OutputMessage, OutputReasoning
from openai_routes.endpoints.responses.wire import ResponseItems
from openai_routes.pipeline.choice import ChoiceOutput
from openai_routes.server.auth import KeyRing
from openai_routes.store import StoreLimits
from openai_routes.store.book import ResponseBook
from tests.unit.fakes import CHAT_MODEL, FakeEmbedEngine, FakeGenerateEngine, build_app, fake_registry

KEY, OTHER_KEY = "sk-unit-responses", "sk-unit-other"
TOOL = {"type": "function", "name": "f"}
IMAGE = {"type": "input_image", "image_url": "https://example.com/a.png"}


@dataclass
class Harness:
    client: httpx.AsyncClient
    other: httpx.AsyncClient
    generator: FakeGenerateEngine
    book: ResponseBook


@asynccontextmanager
async def serve(
    tmp_path: Path, generator: FakeGenerateEngine | None = None, limits: Limits | None = None
) -> AsyncIterator[Harness]:
    generator = generator or FakeGenerateEngine(context=512)
    keyring = KeyRing()
    keyring.set_keys([KEY, OTHER_KEY])
    book = ResponseBook(stale_after=660)
    await book.open(f"sqlite+aiosqlite:///{tmp_path}/responses.db", StoreLimits(3600, 65536), purge_every=60)
    app = build_app(fake_registry(generator, FakeEmbedEngine()), keyring, limits or Limits(), book)
    transport = httpx.ASGITransport(app)
    try:
        async with (
            httpx.AsyncClient(transport=transport, base_url="http://t", headers=auth(KEY)) as client,
            httpx.AsyncClient(transport=transport, base_url="http://t", headers=auth(OTHER_KEY)) as other,
        ):
            yield Harness(client, other, generator, book)
    finally:
        await book.close()


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    async with serve(tmp_path) as harness:
        yield harness


def events(response: httpx.Response) -> list[tuple[str, dict[str, Any]]]:
    """``(event line, payload)`` of every frame, checking that the two agree and that no ``[DONE]`` comes."""
    assert response.headers["content-type"].startswith("text/event-stream")
    frames = [frame for frame in response.text.split("\n\n") if frame]
    parsed = []
    for frame in frames:
        event_line, data_line = frame.split("\n")
        kind, payload = event_line.removeprefix("event: "), json.loads(data_line.removeprefix("data: "))
        assert payload["type"] == kind
        parsed.append((kind, payload))
    return parsed


def error_of(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


async def create(h: Harness, **fields: Any) -> dict[str, Any]:
    response = await h.client.post("/responses", json={"model": CHAT_MODEL, "input": "Hi", **fields})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def first_step(generator: FakeGenerateEngine, nth: int = 1) -> None:
    """Until the engine's ``nth`` request has made its first step (a held one then waits for its release)."""
    for _ in range(100):
        if len(generator.calls) >= nth and generator.calls[nth - 1].steps >= 1:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"the engine's request {nth} made no step")


async def test_a_response_object_has_openai_shape(h: Harness) -> None:
    body = await create(h, instructions="Be brief.", metadata={"k": "v"}, temperature=0.5)
    assert body["id"].startswith("resp_") and body["object"] == "response" and body["status"] == "completed"
    [message] = body["output"]
    assert message["type"] == "message" and message["id"].startswith("msg_") and message["status"] == "completed"
    assert message["content"] == [{"type": "output_text", "text": "Hello, world", "annotations": [], "logprobs": []}]
    assert (body["instructions"], body["metadata"], body["temperature"]) == ("Be brief.", {"k": "v"}, 0.5)
    assert body["usage"]["output_tokens"] == 3
    assert body["usage"]["total_tokens"] == body["usage"]["input_tokens"] + 3
    details = {"cached_tokens": 0, "cache_write_tokens": 0, "cache_write_tokens_details": None}
    assert body["usage"]["input_tokens_details"] == details
    assert h.generator.rendered[-1] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]


async def test_the_stream_is_openai_event_sequence_and_matches_the_stored_response(h: Harness) -> None:
    body = {"model": CHAT_MODEL, "input": "Hi", "stream": True}
    response = await h.client.post("/responses", json=body)
    stream = events(response)
    kinds = [kind for kind, _ in stream]
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * 3,
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [payload["sequence_number"] for _, payload in stream] == list(range(len(stream)))
    final = stream[-1][1]["response"]
    item_ids = {payload["item_id"] for _, payload in stream if "item_id" in payload}
    assert item_ids == {final["output"][0]["id"]}
    assert "".join(payload["delta"] for kind, payload in stream if kind.endswith(".delta")) == "Hello, world"
    stored = (await h.client.get(f"/responses/{final['id']}")).json()
    assert stored == final


async def test_max_output_tokens_makes_an_incomplete_response(h: Harness) -> None:
    h.generator.reply = lambda _p, _c: ["word"] * 40
    body = await create(h, max_output_tokens=16)
    assert body["status"] == "incomplete" and body["incomplete_details"] == {"reason": "max_output_tokens"}
    assert body["output"][0]["status"] == "incomplete"
    stream = events(await h.client.post("/responses", json={"model": CHAT_MODEL, "input": "Hi", "stream": True,
                                                           "max_output_tokens": 16}))  # fmt: skip
    assert stream[-1][0] == "response.incomplete"


async def test_chaining_carries_input_and_output_but_not_instructions(h: Harness) -> None:
    first = await create(h, instructions="First rules.")
    second = await create(h, input="Again", previous_response_id=first["id"])
    assert second["previous_response_id"] == first["id"]
    third = await create(h, input="More", previous_response_id=second["id"], instructions="Third rules.")
    assert h.generator.rendered[-1] == [
        {"role": "system", "content": "Third rules."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello, world"},
        {"role": "user", "content": "Again"},
        {"role": "assistant", "content": "Hello, world"},
        {"role": "user", "content": "More"},
    ]
    assert third["status"] == "completed"


async def test_replayed_output_and_function_call_items_are_accepted(h: Harness) -> None:
    first = await create(h)
    items = [
        {"role": "user", "content": "Hi"},
        *first["output"],
        {"type": "function_call", "call_id": "call_1", "name": "f", "arguments": "{}", "id": "fc_1"},
        {"type": "function_call_output", "call_id": "call_1", "output": "42"},
    ]
    await create(h, input=items)
    rendered = h.generator.rendered[-1]
    assert rendered[1]["role"] == "assistant" and rendered[1]["tool_calls"][0]["id"] == "call_1"
    assert rendered[2] == {"role": "tool", "tool_call_id": "call_1", "content": "42"}


async def test_input_items_list_and_paginate(h: Harness) -> None:
    items = [{"role": "user", "content": f"m{i}"} for i in range(3)]
    body = await create(h, input=items)
    page = (await h.client.get(f"/responses/{body['id']}/input_items", params={"limit": 2})).json()
    assert page["object"] == "list" and page["has_more"] is True
    assert [item["content"][0]["text"] for item in page["data"]] == ["m2", "m1"]
    rest = (await h.client.get(f"/responses/{body['id']}/input_items", params={"after": page["last_id"]})).json()
    assert [item["content"][0]["text"] for item in rest["data"]] == ["m0"] and rest["has_more"] is False
    ascending = (await h.client.get(f"/responses/{body['id']}/input_items", params={"order": "asc"})).json()
    assert [item["content"][0]["text"] for item in ascending["data"]] == ["m0", "m1", "m2"]


async def test_another_key_sees_nothing(h: Harness) -> None:
    body = await create(h)
    path = f"/responses/{body['id']}"
    for response in (
        await h.other.get(path),
        await h.other.delete(path),
        await h.other.get(f"{path}/input_items"),
        await h.other.post(f"{path}/cancel"),
    ):
        assert error_of(response, 404)["param"] == "response_id"
    chained = await h.other.post(
        "/responses", json={"model": CHAT_MODEL, "input": "x", "previous_response_id": body["id"]}
    )
    assert error_of(chained, 400)["code"] == "previous_response_not_found"
    assert (await h.client.get(path)).status_code == 200


async def test_delete_and_store_false(h: Harness) -> None:
    body = await create(h)
    deleted = await h.client.delete(f"/responses/{body['id']}")
    assert deleted.json() == {"id": body["id"], "object": "response", "deleted": True}
    assert error_of(await h.client.get(f"/responses/{body['id']}"), 404)["code"] == "not_found"
    assert (await h.client.delete(f"/responses/{body['id']}")).status_code == 404
    unstored = await create(h, store=False)
    assert unstored["store"] is False
    assert (await h.client.get(f"/responses/{unstored['id']}")).status_code == 404


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"max_output_tokens": 15}, "max_output_tokens"),
        ({"tools": [TOOL], "tool_choice": {"type": "function", "name": "g"}}, "tool_choice"),
        ({"input": []}, "input"),
        ({"input": [{"role": "user", "content": [IMAGE]}]}, "input[0].content[0].image_url"),
        ({"text": {"format": {"type": "json_schema"}}}, "text.format"),
        ({"background": True, "store": False}, None),
        ({"temperature": 3}, "temperature"),
        ({"input": "x" * 600}, "input"),
        ({"input": [{"type": "reasoning"}]}, "input"),
    ],
    ids=["min-tokens", "unknown-tool", "empty-input", "image", "schema-missing", "background-unstored", "temperature",
         "context", "reasoning-alone"],
)  # fmt: skip
async def test_bad_requests_are_400_with_param(h: Harness, fields: dict[str, Any], param: str | None) -> None:
    response = await h.client.post("/responses", json={"model": CHAT_MODEL, "input": "Hi", **fields})
    assert error_of(response, 400)["param"] == param


async def test_unknown_model_and_response_and_bad_key(h: Harness) -> None:
    assert error_of(await h.client.post("/responses", json={"model": "nope", "input": "Hi"}), 404)["param"] == "model"
    assert error_of(await h.client.get("/responses/resp_nope"), 404)["param"] == "response_id"
    unauthorized = await h.client.get("/responses/resp_nope", headers=auth("sk-wrong"))
    assert error_of(unauthorized, 401)["code"] == "invalid_api_key"


async def test_background_runs_to_completion_and_can_be_cancelled(h: Harness) -> None:
    queued = await create(h, background=True)
    assert queued["status"] == "queued" and queued["background"] is True
    for _ in range(100):
        body = (await h.client.get(f"/responses/{queued['id']}")).json()
        if body["status"] == "completed":
            break
        await asyncio.sleep(0.01)
    assert body["status"] == "completed" and body["output"][0]["content"][0]["text"] == "Hello, world"
    assert error_of(await h.client.post(f"/responses/{queued['id']}/cancel"), 400)["param"] is None

    h.generator.hold = asyncio.Event()  # the next run stops after its first step until released
    running = await create(h, background=True)
    await first_step(h.generator, nth=2)  # the first run's request has finished: wait for this run's own
    cancelled = await h.client.post(f"/responses/{running['id']}/cancel")
    assert cancelled.json()["status"] == "cancelled"
    assert h.generator.calls[-1].outcome in ("cancelled", "closed")
    assert (await h.client.get(f"/responses/{running['id']}")).json()["status"] == "cancelled"


async def test_a_background_run_holds_its_admission_slot_until_it_ends(tmp_path: Path) -> None:
    """With room for one sequence and no queue, a running background response fills the engine: other requests,
    background or not, get 429 until it ends; then they run."""
    hold = asyncio.Event()
    generator = FakeGenerateEngine(context=512, hold=hold)
    async with serve(tmp_path, generator, Limits(max_in_flight=1, max_queued=0)) as h:
        running = await create(h, background=True)
        await first_step(generator)
        for background in (False, True):
            busy = await h.client.post(
                "/responses", json={"model": CHAT_MODEL, "input": "Hi", "background": background}
            )
            assert error_of(busy, 429)["code"] == "rate_limit_exceeded"
        assert (await h.client.post(f"/responses/{running['id']}/cancel")).json()["status"] == "cancelled"
        hold.set()
        for _ in range(100):  # the run's task ends (and releases its slot) just after the cancel is answered
            if not h.book.runs:
                break
            await asyncio.sleep(0.01)
        assert (await create(h))["status"] == "completed"


async def test_a_background_post_at_capacity_is_answered_queued_and_runs_when_room_frees(tmp_path: Path) -> None:
    """With room for one sequence and a queue of one: a second background response is answered at once, queued,
    and waits in the queue without its client; the queue bounds it (a third gets 429); it runs once room frees."""
    hold = asyncio.Event()
    generator = FakeGenerateEngine(context=512, hold=hold)
    async with serve(tmp_path, generator, Limits(max_in_flight=1, max_queued=1)) as h:
        running = await create(h, background=True)
        await first_step(generator)
        waiting = await create(h, background=True)
        assert waiting["status"] == "queued"
        busy = await h.client.post("/responses", json={"model": CHAT_MODEL, "input": "Hi", "background": True})
        assert error_of(busy, 429)["code"] == "rate_limit_exceeded"
        await asyncio.sleep(0.05)
        assert (await h.client.get(f"/responses/{waiting['id']}")).json()["status"] == "queued"
        assert len(generator.calls) == 1  # it has not reached the engine
        assert (await h.client.post(f"/responses/{running['id']}/cancel")).json()["status"] == "cancelled"
        hold.set()
        for _ in range(200):
            body = (await h.client.get(f"/responses/{waiting['id']}")).json()
            if body["status"] == "completed":
                break
            await asyncio.sleep(0.01)
        assert body["status"] == "completed" and body["output"][0]["content"][0]["text"] == "Hello, world"


async def test_a_queued_background_response_can_be_cancelled_before_it_runs(tmp_path: Path) -> None:
    hold = asyncio.Event()
    generator = FakeGenerateEngine(context=512, hold=hold)
    async with serve(tmp_path, generator, Limits(max_in_flight=1, max_queued=1)) as h:
        running = await create(h, background=True)
        await first_step(generator)
        waiting = await create(h, background=True)
        assert (await h.client.post(f"/responses/{waiting['id']}/cancel")).json()["status"] == "cancelled"
        assert (await h.client.post(f"/responses/{running['id']}/cancel")).json()["status"] == "cancelled"
        hold.set()
        for _ in range(100):
            if not h.book.runs:
                break
            await asyncio.sleep(0.01)
        assert len(generator.calls) == 1  # the cancelled one never reached the engine
        assert (await h.client.get(f"/responses/{waiting['id']}")).json()["status"] == "cancelled"
        assert (await create(h))["status"] == "completed"  # and it left its place in the queue


async def test_shutdown_records_a_running_background_response_failed(tmp_path: Path) -> None:
    generator = FakeGenerateEngine(context=512, hold=asyncio.Event())
    async with serve(tmp_path, generator) as h:
        running = await create(h, background=True)
        await first_step(generator)
    async with serve(tmp_path) as h:
        body = (await h.client.get(f"/responses/{running['id']}")).json()
    assert body["status"] == "failed" and body["error"]["code"] == "server_error"


class Script:
    """A reader that returns the next scripted events for each delta."""

    def __init__(self, events: list[list[OutputEvent]]) -> None:
        self.events = iter(events)

    def feed(self, text: str, token_ids: Sequence[int], finished: bool) -> list[OutputEvent]:
        return next(self.events)


def test_items_follow_the_events_and_drop_whitespace_before_a_call() -> None:
    script = [
        [OutputEvent("reasoning", "think")],
        [OutputEvent("text", "\n")],
        [OutputEvent("call", "f", 0)],
        [OutputEvent("arguments", '{"a": ', 0)],
        [OutputEvent("arguments", "1}", 0)],
    ]
    choice = ChoiceOutput(reader=Script(script))
    emitted: list[tuple[str, dict[str, Any]]] = []
    items = ResponseItems(choice, lambda kind, fields: emitted.append((kind, fields)))
    for position in range(len(script)):
        last = position == len(script) - 1
        items.feed(choice.feed(OutputDelta(0, "x", [1], finish_reason="stop" if last else None)))
    items.finish()
    reasoning, call = items.items
    assert isinstance(reasoning, OutputReasoning) and reasoning.content[0].text == "think"
    assert isinstance(call, FunctionToolCall) and call.arguments == '{"a": 1}' and call.call_id == choice.ids[0]
    assert call.status == "completed" and call.id.startswith("fc_")
    assert [kind for kind, _ in emitted] == [
        "response.output_item.added",
        "response.reasoning_text.delta",
        "response.reasoning_text.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
    ]
    assert [fields["output_index"] for _, fields in emitted] == [0, 0, 0, 0, 1, 1, 1, 1, 1]
    assert emitted[4][1]["item"]["arguments"] == "" and emitted[-1][1]["item"]["arguments"] == '{"a": 1}'


def test_whitespace_alone_is_the_answer() -> None:
    choice = ChoiceOutput(reader=Script([[OutputEvent("text", " ")]]))
    items = ResponseItems(choice, lambda kind, fields: None)
    items.feed(choice.feed(OutputDelta(0, " ", [1], finish_reason="stop")))
    items.finish()
    [message] = items.items
    assert isinstance(message, OutputMessage) and message.content[0].text == " "


async def test_vllm_sampling_extras_reach_the_engine(h: Harness) -> None:
    await create(h, ignore_eos=True, top_k=5, seed=7)
    options = h.generator.calls[-1].options
    assert (options.ignore_eos, options.top_k, options.seed) == (True, 5, 7)
    response = await h.client.post("/responses", json={"model": CHAT_MODEL, "input": "Hi", "top_k": -2})
    assert error_of(response, 400)["param"] == "top_k"


async def test_input_tokens_are_what_a_create_reports_and_nothing_runs(h: Harness) -> None:
    first = await create(h, instructions="First rules.")
    fields = {"input": "Again", "previous_response_id": first["id"], "instructions": "Other rules.", "tools": [TOOL]}
    steps = len(h.generator.calls)
    counted = await h.client.post("/responses/input_tokens", json={"model": CHAT_MODEL, **fields})
    assert counted.status_code == 200, counted.text
    assert set(counted.json()) == {"object", "input_tokens"} and counted.json()["object"] == "response.input_tokens"
    assert len(h.generator.calls) == steps, "counting runs nothing"
    created = await create(h, **fields)
    assert counted.json()["input_tokens"] == created["usage"]["input_tokens"] > 0
    refused = await h.other.post("/responses/input_tokens", json={"model": CHAT_MODEL, **fields})
    assert error_of(refused, 400)["code"] == "previous_response_not_found"  # another key's chain is not theirs
    bad = await h.client.post("/responses/input_tokens", json={"model": CHAT_MODEL, "input": []})
    assert error_of(bad, 400)["param"] == "input"
