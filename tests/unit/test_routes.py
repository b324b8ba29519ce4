"""The routers end to end through ``create_app`` with scripted engines (no vLLM, no server).

``httpx.ASGITransport`` buffers whole responses, so client-side disconnects are driven with raw ASGI calls.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.types import Message

from openai_routes.core.engine import EngineInputError, EngineUnavailableError
from openai_routes.core.limits import Limits
from openai_routes.endpoints.completions.protocol import CompletionLogprobs
from openai_routes.server.auth import KeyRing
from tests.unit.fakes import (
    CHAT_ALIAS,
    CHAT_MODEL,
    EMBED_MODEL,
    FakeEmbedEngine,
    FakeGenerateEngine,
    build_app,
    chat_prompt,
    fake_registry,
    http_scope,
)

KEY = "sk-unit-test-key"
USER = [{"role": "user", "content": "Hi"}]
PROMPT_TOKENS = len(chat_prompt(USER))  # "<user>Hi<assistant>"
ERROR_KEYS = {"message", "type", "param", "code"}


@dataclass
class Harness:
    client: httpx.AsyncClient
    app: FastAPI
    generator: FakeGenerateEngine = field(default_factory=FakeGenerateEngine)
    embedder: FakeEmbedEngine = field(default_factory=FakeEmbedEngine)


@asynccontextmanager
async def serve(
    generator: FakeGenerateEngine | None = None,
    embedder: FakeEmbedEngine | None = None,
    limits: Limits | None = None,
    raise_app_exceptions: bool = True,
) -> AsyncIterator[Harness]:
    generator = generator or FakeGenerateEngine()
    embedder = embedder or FakeEmbedEngine()
    keyring = KeyRing()
    keyring.set_keys([KEY])
    app = build_app(fake_registry(generator, embedder), keyring, limits or Limits(max_n=4))
    transport = httpx.ASGITransport(app, raise_app_exceptions=raise_app_exceptions)
    headers = {"Authorization": f"Bearer {KEY}"}
    async with httpx.AsyncClient(transport=transport, base_url="http://test", headers=headers) as client:
        yield Harness(client, app, generator, embedder)


@pytest.fixture
async def h() -> AsyncIterator[Harness]:
    async with serve() as harness:
        yield harness


def sse_events(response: httpx.Response) -> list[Any]:
    """The JSON payloads of an SSE body, checking the framing; the final ``[DONE]`` is returned as a string."""
    assert response.headers["content-type"].startswith("text/event-stream")
    text = response.text
    assert text.endswith("data: [DONE]\n\n")
    frames = text.split("\n\n")
    assert frames[-1] == ""
    assert all(frame.startswith("data: ") for frame in frames[:-1])
    return [frame[6:] if frame == "data: [DONE]" else json.loads(frame[6:]) for frame in frames[:-1]]


def assert_error(response: httpx.Response, status: int, param: str | None, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == ERROR_KEYS
    assert (error["param"], error["code"]) == (param, code)
    return error


# --- chat -------------------------------------------------------------------------------------------------------


async def test_chat_completion_shape(h: Harness) -> None:
    h.generator.cached_tokens = 3
    response = await h.client.post("/chat/completions", json={"model": CHAT_MODEL, "messages": USER})
    assert response.status_code == 200
    body = response.json()
    assert body["id"].startswith("chatcmpl-")
    assert body["object"] == "chat.completion"
    assert isinstance(body["created"], int) and body["created"] > 0
    assert body["model"] == CHAT_MODEL
    assert body["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello, world", "refusal": None, "tool_calls": None},
            "finish_reason": "stop",
            "logprobs": None,
        }
    ]
    assert body["usage"] == {
        "prompt_tokens": PROMPT_TOKENS,
        "completion_tokens": 3,
        "total_tokens": PROMPT_TOKENS + 3,
        "prompt_tokens_details": {"cached_tokens": 3},
        "completion_tokens_details": None,  # a model without a reasoning parser
    }
    [call] = h.generator.calls
    assert call.request_id == body["id"]
    assert call.outcome == "finished"


async def test_chat_passes_sampling_options_and_fills_the_context(h: Harness) -> None:
    request = {
        "model": CHAT_ALIAS,
        "messages": USER,
        "temperature": 0.5,
        "top_p": 0.9,
        "seed": 7,
        "stop": "END",
        "logit_bias": {"42": -100},
        "extra_field_from_a_new_sdk": {"ignored": True},
    }
    response = await h.client.post("/chat/completions", json=request)
    assert response.status_code == 200
    assert response.json()["model"] == CHAT_ALIAS
    options = h.generator.calls[0].options
    assert (options.temperature, options.top_p, options.seed, options.stop) == (0.5, 0.9, 7, ("END",))
    assert options.logit_bias == {42: -100.0}
    assert options.max_tokens == h.generator.max_model_len - PROMPT_TOKENS  # no max_tokens: the room left
    assert options.logprobs is None


async def test_chat_max_completion_tokens_wins_and_truncates(h: Harness) -> None:
    request = {"model": CHAT_MODEL, "messages": USER, "max_tokens": 3, "max_completion_tokens": 2}
    response = await h.client.post("/chat/completions", json=request)
    choice = response.json()["choices"][0]
    assert h.generator.calls[0].options.max_tokens == 2
    assert (choice["message"]["content"], choice["finish_reason"]) == ("Hello,", "length")
    assert response.json()["usage"]["completion_tokens"] == 2


async def test_chat_renders_developer_as_system_and_text_parts_as_a_string(h: Harness) -> None:
    messages = [
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Hel"}, {"type": "text", "text": "lo"}]},
    ]
    response = await h.client.post("/chat/completions", json={"model": CHAT_MODEL, "messages": messages})
    assert response.status_code == 200
    assert h.generator.rendered == [[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}]]


async def test_chat_n_choices(h: Harness) -> None:
    h.generator.reply = lambda _prompt, j: [f"choice {j}"] * (j + 1)
    response = await h.client.post("/chat/completions", json={"model": CHAT_MODEL, "messages": USER, "n": 3})
    body = response.json()
    assert [c["index"] for c in body["choices"]] == [0, 1, 2]
    assert [c["message"]["content"] for c in body["choices"]] == ["choice 0", "choice 1" * 2, "choice 2" * 3]
    assert body["usage"]["completion_tokens"] == 6
    assert h.generator.calls[0].options.n == 3


async def test_chat_logprobs(h: Harness) -> None:
    request = {"model": CHAT_MODEL, "messages": USER, "logprobs": True, "top_logprobs": 2}
    response = await h.client.post("/chat/completions", json=request)
    assert h.generator.calls[0].options.logprobs == 2
    content = response.json()["choices"][0]["logprobs"]["content"]
    assert [entry["token"] for entry in content] == ["Hello", ",", " world"]
    assert content[0]["bytes"] == list(b"Hello")
    assert content[0]["logprob"] == -0.25
    assert [top["token"] for top in content[0]["top_logprobs"]] == ["Hello", "?"]


async def test_chat_stream(h: Harness) -> None:
    h.generator.reply = lambda _prompt, j: ["a", "b"] if j == 0 else ["c"]
    request = {"model": CHAT_MODEL, "messages": USER, "stream": True, "n": 2}
    response = await h.client.post("/chat/completions", json=request)
    assert response.status_code == 200
    *chunks, done = sse_events(response)
    assert done == "[DONE]"
    assert len({(chunk["id"], chunk["created"]) for chunk in chunks}) == 1
    assert chunks[0]["id"].startswith("chatcmpl-")
    assert all(chunk["object"] == "chat.completion.chunk" and chunk["usage"] is None for chunk in chunks)
    deltas: dict[int, list[dict[str, Any]]] = {0: [], 1: []}
    for chunk in chunks:
        for choice in chunk["choices"]:
            deltas[choice["index"]].append(choice)
    for index, text in ((0, "ab"), (1, "c")):
        choices = deltas[index]
        assert choices[0]["delta"]["role"] == "assistant"
        assert all(choice["delta"]["role"] is None for choice in choices[1:])
        assert "".join(choice["delta"]["content"] or "" for choice in choices) == text
        assert [choice["finish_reason"] for choice in choices][-1] == "stop"
        assert all(choice["finish_reason"] is None for choice in choices[:-1])
    assert h.generator.calls[0].outcome == "finished"


async def test_chat_stream_include_usage(h: Harness) -> None:
    request = {"model": CHAT_MODEL, "messages": USER, "stream": True, "stream_options": {"include_usage": True}}
    *chunks, _ = sse_events(await h.client.post("/chat/completions", json=request))
    assert all(chunk["usage"] is None for chunk in chunks[:-1])
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["prompt_tokens"] == PROMPT_TOKENS
    assert chunks[-1]["usage"]["completion_tokens"] == 3


# --- completions ----------------------------------------------------------------------------------------------


async def test_completions_several_prompts_index_is_prompt_times_n_plus_j(h: Harness) -> None:
    h.generator.reply = lambda prompt, j: [f"{prompt.upper()}", f"-{j}"]
    request = {"model": CHAT_MODEL, "prompt": ["ab", "cde"], "n": 2, "max_tokens": 5}
    response = await h.client.post("/completions", json=request)
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "text_completion"
    assert body["id"].startswith("cmpl-")
    texts = {choice["index"]: choice["text"] for choice in body["choices"]}
    assert texts == {0: "AB-0", 1: "AB-1", 2: "CDE-0", 3: "CDE-1"}
    assert [choice["index"] for choice in body["choices"]] == [0, 1, 2, 3]
    assert all(choice["finish_reason"] == "stop" for choice in body["choices"])
    assert body["usage"] == {
        "prompt_tokens": 5,
        "completion_tokens": 8,
        "total_tokens": 13,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": None,
    }
    assert [call.prompt_token_ids for call in h.generator.calls] == [[97, 98], [99, 100, 101]]
    assert len({call.request_id for call in h.generator.calls}) == 2
    assert all(call.options.n == 2 and call.options.max_tokens == 5 for call in h.generator.calls)


async def test_completions_token_id_prompts(h: Harness) -> None:
    h.generator.reply = lambda prompt, _j: [f"[{prompt}]"]
    response = await h.client.post("/completions", json={"model": CHAT_MODEL, "prompt": [[104, 105], [111]]})
    assert [choice["text"] for choice in response.json()["choices"]] == ["[hi]", "[o]"]


async def test_completions_echo(h: Harness) -> None:
    request = {"model": CHAT_MODEL, "prompt": "Say", "echo": True}
    response = await h.client.post("/completions", json=request)
    assert response.json()["choices"][0]["text"] == "SayHello, world"


async def test_completions_echo_with_logprobs(h: Harness) -> None:
    request = {"model": CHAT_MODEL, "prompt": "Say", "echo": True, "logprobs": 1, "max_tokens": 2}
    response = await h.client.post("/completions", json=request)
    options = h.generator.calls[0].options
    assert (options.logprobs, options.prompt_logprobs) == (1, 1)
    choice = response.json()["choices"][0]
    assert choice["text"] == "SayHello,"
    assert choice["finish_reason"] == "length"
    logprobs = choice["logprobs"]
    assert logprobs["tokens"] == ["S", "a", "y", "Hello", ","]
    assert logprobs["token_logprobs"] == [None, -1.5, -1.5, -0.25, -0.25]
    assert logprobs["text_offset"] == [0, 1, 2, 3, 8]
    assert logprobs["top_logprobs"][0] is None
    assert logprobs["top_logprobs"][3] == {"Hello": -0.25}


async def test_completions_stream(h: Harness) -> None:
    h.generator.reply = lambda prompt, _j: [prompt, "!"]
    request = {"model": CHAT_MODEL, "prompt": ["x", "y"], "stream": True, "stream_options": {"include_usage": True}}
    *chunks, done = sse_events(await h.client.post("/completions", json=request))
    assert done == "[DONE]"
    assert all(chunk["object"] == "text_completion" for chunk in chunks)
    assert len({chunk["id"] for chunk in chunks}) == 1
    text: dict[int, str] = {}
    for chunk in chunks[:-1]:
        for choice in chunk["choices"]:
            text[choice["index"]] = text.get(choice["index"], "") + choice["text"]
    assert text == {0: "x!", 1: "y!"}
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {
        "prompt_tokens": 2,
        "completion_tokens": 4,
        "total_tokens": 6,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": None,
    }


@pytest.mark.parametrize("stream", [False, True])
async def test_completions_report_the_engines_cached_tokens_as_chat_does(h: Harness, stream: bool) -> None:
    """The engine's prefix-cache hits per prompt, summed over the prompts (chat reported them; completions did not)."""
    h.generator.cached_tokens = 3
    body: dict[str, Any] = {"model": CHAT_MODEL, "prompt": ["ab", "cde"], "max_tokens": 2, "stream": stream}
    if stream:
        body["stream_options"] = {"include_usage": True}
    response = await h.client.post("/completions", json=body)
    usage = sse_events(response)[-2]["usage"] if stream else response.json()["usage"]
    assert usage["prompt_tokens_details"] == {"cached_tokens": 6}
    chat = await h.client.post("/chat/completions", json={"model": CHAT_MODEL, "messages": USER})
    assert chat.json()["usage"]["prompt_tokens_details"] == {"cached_tokens": 3}


def repeated(pieces: list[str], _prompt: str, _choice: int) -> list[str]:
    return pieces


async def test_completions_logprobs_cost_is_linear_in_the_output_length() -> None:
    """A collected completion builds its logprobs once: the entries copied grow linearly with the output (the old
    code joined every step's lists into the answer so far, copying its whole length again per token)."""
    copied: list[int] = []
    original = CompletionLogprobs.__init__

    def counting(self: CompletionLogprobs, **fields: Any) -> None:
        copied.append(len(fields["tokens"]))
        original(self, **fields)

    for length in (50, 400):
        copied.clear()
        CompletionLogprobs.__init__ = counting  # type: ignore[method-assign]
        try:
            engine = FakeGenerateEngine(reply=functools.partial(repeated, ["a"] * length), context=1024)
            async with serve(engine) as h:
                body = {"model": CHAT_MODEL, "prompt": "x", "max_tokens": length, "logprobs": 1}
                response = await h.client.post("/completions", json=body)
        finally:
            CompletionLogprobs.__init__ = original  # type: ignore[method-assign]
        assert response.status_code == 200, response.text
        assert len(response.json()["choices"][0]["logprobs"]["tokens"]) == length
        assert sum(copied) <= 2 * length, f"{sum(copied)} entries copied for {length} tokens"


async def test_completions_default_max_tokens_respects_configured_cap() -> None:
    """A request without ``max_tokens`` must not be refused for a default the client never sent.

    ``CompletionRequest.max_tokens`` defaults to 16 and ``check_request`` compares it with ``limits.max_tokens``.
    """
    async with serve(limits=Limits(max_tokens=8)) as h:
        response = await h.client.post("/completions", json={"model": CHAT_MODEL, "prompt": "x"})
        assert response.status_code == 200, response.text
        assert h.generator.calls[0].options.max_tokens <= 8


# --- embeddings -----------------------------------------------------------------------------------------------


async def test_embeddings_float_in_input_order(h: Harness) -> None:
    inputs = ["a", "bb", "ccc"]
    response = await h.client.post("/embeddings", json={"model": EMBED_MODEL, "input": inputs})
    assert response.status_code == 200
    body = response.json()
    assert h.embedder.finished == [call.request_id for call in reversed(h.embedder.calls)]  # last one done first
    assert body["object"] == "list" and body["model"] == EMBED_MODEL
    assert [item["index"] for item in body["data"]] == [0, 1, 2]
    assert all(item["object"] == "embedding" for item in body["data"])
    expected = [FakeEmbedEngine.vector_for([ord(c) for c in text], 4) for text in inputs]
    assert [item["embedding"] for item in body["data"]] == expected
    assert body["usage"] == {"prompt_tokens": 6, "total_tokens": 6}


async def test_embeddings_base64_is_little_endian_float32(h: Harness) -> None:
    request = {"model": EMBED_MODEL, "input": [[5, 6], [7]], "encoding_format": "base64"}
    data = (await h.client.post("/embeddings", json=request)).json()["data"]
    decoded = [list(struct.unpack("<4f", base64.b64decode(item["embedding"]))) for item in data]
    assert decoded == [FakeEmbedEngine.vector_for([5, 6], 4), FakeEmbedEngine.vector_for([7], 4)]


async def test_embeddings_dimensions(h: Harness) -> None:
    request = {"model": EMBED_MODEL, "input": "abc", "dimensions": 2}
    data = (await h.client.post("/embeddings", json=request)).json()["data"]
    assert data[0]["embedding"] == [3.0, float(ord("a") % 8)]
    assert h.embedder.calls[0].dimensions == 2
    refused = await h.client.post("/embeddings", json={**request, "dimensions": 3})
    assert_error(refused, 400, "dimensions")


@pytest.mark.parametrize(
    ("inputs", "code"),
    [("", None), (["ok", ""], None), ("x" * 33, "context_length_exceeded"), ([[1] * 33], "context_length_exceeded")],
)
async def test_embeddings_bad_inputs(h: Harness, inputs: Any, code: str | None) -> None:
    response = await h.client.post("/embeddings", json={"model": EMBED_MODEL, "input": inputs})
    assert_error(response, 400, "input", code)
    assert h.embedder.calls == []


# --- context length and limits --------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
async def test_chat_context_length_exceeded_is_a_plain_400(h: Harness, stream: bool) -> None:
    messages = [{"role": "user", "content": "x" * 50}]  # "<user>" + 50 + "<assistant>": 67 prompt tokens > 64
    response = await h.client.post(
        "/chat/completions", json={"model": CHAT_MODEL, "messages": messages, "stream": stream}
    )
    error = assert_error(response, 400, "messages", "context_length_exceeded")
    assert "maximum context length is 64 tokens" in error["message"]
    assert "you requested 68 tokens (67 in the messages, 1 in the completion)" in error["message"]
    assert h.generator.calls == []


@pytest.mark.parametrize("stream", [False, True])
async def test_chat_max_tokens_beyond_the_room_left(h: Harness, stream: bool) -> None:
    request = {"model": CHAT_MODEL, "messages": USER, "max_tokens": 64 - PROMPT_TOKENS + 1, "stream": stream}
    error = assert_error(
        await h.client.post("/chat/completions", json=request), 400, "messages", "context_length_exceeded"
    )
    assert f"you requested 65 tokens ({PROMPT_TOKENS} in the messages" in error["message"]
    request["max_tokens"] = 64 - PROMPT_TOKENS
    assert (await h.client.post("/chat/completions", json=request)).status_code == 200


@pytest.mark.parametrize("stream", [False, True])
async def test_completions_context_length_exceeded(h: Harness, stream: bool) -> None:
    request = {"model": CHAT_MODEL, "prompt": ["ok", "x" * 60], "max_tokens": 10, "stream": stream}
    error = assert_error(await h.client.post("/completions", json=request), 400, "prompt", "context_length_exceeded")
    assert "(60 in the prompt, 10 in the completion)" in error["message"]
    assert h.generator.calls == []


@pytest.mark.parametrize(
    ("path", "request_body", "param"),
    [
        ("/chat/completions", {"model": CHAT_MODEL, "messages": USER, "n": 5}, "n"),
        ("/completions", {"model": CHAT_MODEL, "prompt": "x", "n": 5}, "n"),
        ("/chat/completions", {"model": CHAT_MODEL, "messages": USER, "max_tokens": 11}, "max_tokens"),
        ("/chat/completions", {"model": CHAT_MODEL, "messages": USER * 4}, "messages"),
        ("/completions", {"model": CHAT_MODEL, "prompt": ["a", "b", "c"], "max_tokens": 1}, "prompt"),
        ("/embeddings", {"model": EMBED_MODEL, "input": ["a", "b", "c"]}, "input"),
    ],
)
async def test_configured_limits(path: str, request_body: dict[str, Any], param: str) -> None:
    async with serve(limits=Limits(max_n=4, max_tokens=10, max_messages=3, max_prompts=2)) as h:
        assert_error(await h.client.post(path, json=request_body), 400, param)
        assert h.generator.calls == [] and h.embedder.calls == []


async def test_n_at_the_limit_is_accepted(h: Harness) -> None:
    response = await h.client.post("/chat/completions", json={"model": CHAT_MODEL, "messages": USER, "n": 4})
    assert len(response.json()["choices"]) == 4


# --- models and routing ---------------------------------------------------------------------------------------


async def test_models_list_and_retrieve(h: Harness) -> None:
    body = (await h.client.get("/models")).json()
    assert body["object"] == "list"
    assert [(m["id"], m["object"], m["owned_by"]) for m in body["data"]] == [
        (CHAT_MODEL, "model", "tests"),
        (CHAT_ALIAS, "model", "tests"),
        (EMBED_MODEL, "model", "tests"),
    ]
    model = (await h.client.get(f"/models/{EMBED_MODEL}")).json()
    assert model == {
        "id": EMBED_MODEL,
        "object": "model",
        "created": 1700000001,
        "owned_by": "tests",
        "max_model_len": 32,
        "root": EMBED_MODEL,
        "parent": None,
        "input_modalities": ["text"],
    }


@pytest.mark.parametrize(
    ("method", "path", "request_body"),
    [
        ("POST", "/chat/completions", {"model": "no-such/model", "messages": USER}),
        ("POST", "/chat/completions", {"model": "no-such/model", "messages": USER, "stream": True}),
        ("POST", "/completions", {"model": "no-such/model", "prompt": "x"}),
        ("POST", "/embeddings", {"model": "no-such/model", "input": "x"}),
        ("GET", "/models/no-such/model", None),
    ],
)
async def test_model_not_found(h: Harness, method: str, path: str, request_body: dict[str, Any] | None) -> None:
    response = await h.client.request(method, path, json=request_body)
    error = assert_error(response, 404, "model", "model_not_found")
    assert error["message"] == "The model `no-such/model` does not exist or you do not have access to it."


@pytest.mark.parametrize(
    ("path", "request_body"),
    [
        ("/chat/completions", {"model": EMBED_MODEL, "messages": USER}),
        ("/completions", {"model": EMBED_MODEL, "prompt": "x"}),
        ("/embeddings", {"model": CHAT_ALIAS, "input": "x"}),
    ],
)
async def test_model_used_for_the_wrong_task(h: Harness, path: str, request_body: dict[str, Any]) -> None:
    error = assert_error(await h.client.post(path, json=request_body), 400, "model", "model_not_supported")
    assert request_body["model"] in error["message"]


async def test_unknown_route_and_method(h: Harness) -> None:
    error = assert_error(await h.client.get("/nope"), 404, None, "not_found")
    assert error["message"] == "Unknown route: GET /nope"
    assert_error(await h.client.get("/completions"), 405, None, "method_not_allowed")
    assert_error(await h.client.put("/chat/completions"), 405, None, "method_not_allowed")


async def test_validation_error_through_the_app(h: Harness) -> None:
    request = {"model": CHAT_MODEL, "messages": [{"role": "robot", "content": "hi"}], "stream": True}
    error = assert_error(await h.client.post("/chat/completions", json=request), 400, "messages[0].role")
    assert "robot" not in error["message"]
    bad_json = await h.client.post(
        "/chat/completions", content=b'{"model": ', headers={"content-type": "application/json"}
    )
    assert_error(bad_json, 400, None)


# --- engine errors --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
async def test_engine_input_error_is_400_before_the_stream(h: Harness, stream: bool) -> None:
    h.generator.error = EngineInputError("logit_bias refers to a token outside the vocabulary", param="logit_bias")
    request = {"model": CHAT_MODEL, "messages": USER, "stream": stream}
    error = assert_error(await h.client.post("/chat/completions", json=request), 400, "logit_bias")
    assert error["message"] == "logit_bias refers to a token outside the vocabulary"
    assert error["type"] == "invalid_request_error"


@pytest.mark.parametrize("path", ["/chat/completions", "/completions"])
async def test_engine_unavailable_is_503_with_retry_after(h: Harness, path: str) -> None:
    h.generator.error = EngineUnavailableError("engine dead")
    request = {"model": CHAT_MODEL, "messages": USER, "prompt": "x", "stream": True}
    response = await h.client.post(path, json=request)
    error = assert_error(response, 503, None, "service_unavailable")
    assert error["type"] == "server_error"
    assert int(response.headers["retry-after"]) > 0


async def test_unhealthy_engine_is_503(h: Harness) -> None:
    h.embedder.healthy = False
    response = await h.client.post("/embeddings", json={"model": EMBED_MODEL, "input": "x"})
    assert_error(response, 503, None, "service_unavailable")
    assert "retry-after" in response.headers
    assert h.embedder.calls == []


async def test_embed_engine_errors_are_mapped(h: Harness) -> None:
    h.embedder.error = EngineInputError("input too long", param="input")
    assert_error(await h.client.post("/embeddings", json={"model": EMBED_MODEL, "input": "x"}), 400, "input")
    h.embedder.error = EngineUnavailableError()
    assert_error(
        await h.client.post("/embeddings", json={"model": EMBED_MODEL, "input": "x"}), 503, None, "service_unavailable"
    )


async def test_unexpected_engine_error_is_500_without_details() -> None:
    async with serve(raise_app_exceptions=False) as h:
        h.generator.error = RuntimeError("CUDA error at /secret/path.cu:42")
        response = await h.client.post("/chat/completions", json={"model": CHAT_MODEL, "messages": USER})
        error = assert_error(response, 500, None)
        assert error["type"] == "server_error"
        assert "req-" in error["message"]
        assert "secret" not in response.text and "CUDA" not in response.text


@pytest.mark.parametrize("path", ["/chat/completions", "/completions"])
async def test_error_mid_stream_is_an_error_frame_then_done(h: Harness, path: str) -> None:
    h.generator.error = EngineUnavailableError("engine died")
    h.generator.error_after = 1
    request = {"model": CHAT_MODEL, "messages": USER, "prompt": "x", "stream": True}
    response = await h.client.post(path, json=request)
    assert response.status_code == 200
    *events, error_frame, done = sse_events(response)
    assert done == "[DONE]"
    assert len(events) == 1 and "choices" in events[0]
    assert set(error_frame) == {"error"}
    assert set(error_frame["error"]) == ERROR_KEYS
    assert error_frame["error"]["code"] == "service_unavailable"


async def test_completions_failed_submit_closes_the_prompts_already_started(h: Harness) -> None:
    h.generator.prompt_errors = {"bad": EngineInputError("refused", param="prompt")}
    response = await h.client.post("/completions", json={"model": CHAT_MODEL, "prompt": ["good", "bad"]})
    assert_error(response, 400, "prompt")
    assert [call.outcome for call in h.generator.calls] == ["closed", "failed"]
    assert h.generator.num_in_flight() == 0


# --- client disconnects ---------------------------------------------------------------------------------------


async def call_then_disconnect(app: FastAPI, path: str, request_body: dict[str, Any]) -> list[Message]:
    """Send one request over raw ASGI; the client hangs up once the first body bytes arrive (or right away)."""
    sent: list[Message] = []
    got_body = asyncio.Event()
    body_read = False

    async def receive() -> Message:
        nonlocal body_read
        if not body_read:
            body_read = True
            return {"type": "http.request", "body": json.dumps(request_body).encode(), "more_body": False}
        if request_body.get("stream"):
            await got_body.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)
        if message["type"] == "http.response.body" and message.get("body"):
            got_body.set()

    await asyncio.wait_for(app(http_scope(path, KEY), receive, send), timeout=2)
    return sent


@pytest.mark.parametrize("path", ["/chat/completions", "/completions"])
async def test_stream_closed_by_the_client_stops_the_engine_request(h: Harness, path: str) -> None:
    h.generator.hold = asyncio.Event()  # the engine never produces its second step
    request = {"model": CHAT_MODEL, "messages": USER, "prompt": "x", "stream": True}
    sent = await call_then_disconnect(h.app, path, request)
    assert sent[0]["status"] == 200
    assert b"Hello" in sent[1]["body"]
    [call] = h.generator.calls
    assert call.outcome in ("closed", "cancelled")
    assert h.generator.num_in_flight() == 0


async def test_non_stream_request_abandoned_by_the_client_stops_the_engine_request(h: Harness) -> None:
    """A client that times out a non-streamed request must not leave its generation running to the end.

    FastAPI does not watch for ``http.disconnect`` outside ``StreamingResponse``, so the handler (and the engine
    request) runs on after the client left; vLLM's own server wraps such handlers in ``with_cancellation``.
    """
    h.generator.hold = asyncio.Event()
    request = {"model": CHAT_MODEL, "messages": USER, "stream": False}
    try:
        await call_then_disconnect(h.app, "/chat/completions", request)
    except TimeoutError:
        pytest.fail("the handler kept waiting for the engine after the client disconnected")
    finally:
        h.generator.hold.set()
    assert h.generator.calls[0].outcome in ("closed", "cancelled")
