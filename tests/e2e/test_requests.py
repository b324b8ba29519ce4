"""Request edge cases real clients hit, through the real service.

JS clients, LiteLLM and others send ``null`` for fields they leave unset: null means "not given" and the
default applies. ``stream_options`` without ``stream: true`` is refused as OpenAI refuses it. Image, audio and
file content parts are refused with a message that says so and a ``param`` that points at the part.
"""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest
from openai.types import Completion, CreateEmbeddingResponse
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from tests.e2e.conftest import CHAT_MODEL
from tests.e2e.test_embeddings import EMBED_MODEL
from tests.e2e.test_errors import SENTINEL, envelope

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
EMBEDDINGS = "/v1/embeddings"
USER = {"role": "user", "content": "Say hi."}

# Every optional field the SDK types as nullable and we take, plus a few we ignore, all null.
SAMPLING_NULLS: dict[str, Any] = {
    "n": None,
    "stream": None,
    "stream_options": None,
    "temperature": None,
    "top_p": None,
    "stop": None,
    "seed": None,
    "presence_penalty": None,
    "frequency_penalty": None,
    "logit_bias": None,
    "user": None,
}
CHAT_NULLS: dict[str, Any] = {
    **SAMPLING_NULLS,
    "logprobs": None,
    "top_logprobs": None,
    "max_completion_tokens": None,
    "response_format": None,
    "tools": None,
    "tool_choice": None,
    "parallel_tool_calls": None,
    "metadata": None,
    "store": None,
    "service_tier": None,
    "reasoning_effort": None,
}
COMPLETION_NULLS: dict[str, Any] = {
    **SAMPLING_NULLS,
    "max_tokens": None,
    "logprobs": None,
    "echo": None,
    "best_of": None,
    "suffix": None,
}


def ok(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")  # stream: null is not a stream
    body: dict[str, Any] = response.json()
    return body


# --- null means "not given" ----------------------------------------------------------------------------------


def test_chat_with_null_fields(http: httpx.Client) -> None:
    message = {**USER, "name": None}
    body = {"model": CHAT_MODEL, "messages": [message], "max_tokens": 3, **CHAT_NULLS}
    answer = ChatCompletion.model_validate(ok(http.post(CHAT, json=body)))
    assert len(answer.choices) == 1  # n: null -> 1
    assert answer.choices[0].logprobs is None  # logprobs: null -> off
    assert answer.choices[0].message.tool_calls is None
    assert answer.usage is not None and 1 <= answer.usage.completion_tokens <= 3


def test_chat_with_null_inside_nested_objects(http: httpx.Client) -> None:
    tool = {"type": "function", "function": {"name": "noop", "description": None, "parameters": None, "strict": None}}
    body = {
        "model": CHAT_MODEL,
        "messages": [USER],
        "max_tokens": 3,
        "tools": [tool],
        "tool_choice": "none",
        "response_format": {"type": "json_schema", "json_schema": {"name": "r", "schema": None, "strict": None}},
    }
    answer = ChatCompletion.model_validate(ok(http.post(CHAT, json=body)))
    assert len(answer.choices) == 1
    streamed = {**body, "stream": True, "stream_options": {"include_usage": None}}
    with http.stream("POST", CHAT, json=streamed) as response:
        payloads = [line.removeprefix("data: ") for line in response.iter_lines() if line.startswith("data: ")]
    assert response.status_code == 200
    assert payloads[-1] == "[DONE]"
    chunks = [ChatCompletionChunk.model_validate_json(payload) for payload in payloads[:-1]]
    assert chunks and all(chunk.usage is None for chunk in chunks)  # include_usage: null -> off


def test_completion_with_null_fields(http: httpx.Client) -> None:
    body = {"model": CHAT_MODEL, "prompt": "The capital of France is", **COMPLETION_NULLS, "temperature": 0}
    answer = Completion.model_validate(ok(http.post(COMPLETIONS, json=body)))
    assert len(answer.choices) == 1 and answer.choices[0].logprobs is None
    assert not answer.choices[0].text.startswith("The capital")  # echo: null -> off
    assert answer.usage is not None and 1 <= answer.usage.completion_tokens <= 16  # max_tokens: null -> 16


def test_embeddings_with_null_fields(http: httpx.Client) -> None:
    body = {"model": EMBED_MODEL, "input": "A man is eating food.", "encoding_format": None, "dimensions": None}
    answer = CreateEmbeddingResponse.model_validate(ok(http.post(EMBEDDINGS, json={**body, "user": None})))
    [item] = answer.data
    assert isinstance(item.embedding, list) and len(item.embedding) == 384  # encoding_format: null -> float


# --- stream_options needs stream: true -----------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, None, "absent"])
@pytest.mark.parametrize("path", [CHAT, COMPLETIONS])
def test_stream_options_without_stream_is_400(http: httpx.Client, path: str, stream: bool | str | None) -> None:
    body: dict[str, Any] = {"model": CHAT_MODEL, "max_tokens": 2, "stream_options": {"include_usage": True}}
    body.update({"messages": [USER]} if path == CHAT else {"prompt": SENTINEL})
    if stream != "absent":
        body["stream"] = stream
    error = envelope(http.post(path, json=body), 400)
    assert (error["type"], error["param"]) == ("invalid_request_error", "stream_options")
    assert "'stream'" in error["message"]


def test_stream_options_without_stream_raises_bad_request_error(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model=CHAT_MODEL,
            messages=[{"role": "user", "content": "hi"}],
            max_tokens=2,
            stream_options={"include_usage": True},
        )
    assert info.value.status_code == 400 and info.value.param == "stream_options"


# --- content parts this model cannot read (text only: images too, refused before anything is fetched) ---------

UNSUPPORTED_PARTS = [
    ({"type": "image_url", "image_url": {"url": f"https://example.com/{SENTINEL}.png"}}, "image"),
    ({"type": "input_audio", "input_audio": {"data": SENTINEL, "format": "wav"}}, "audio"),
    ({"type": "file", "file": {"filename": f"{SENTINEL}.pdf", "file_data": SENTINEL}}, "file"),
]


@pytest.mark.parametrize(("part", "kind"), UNSUPPORTED_PARTS, ids=[kind for _, kind in UNSUPPORTED_PARTS])
def test_unsupported_content_part_is_400(
    client: openai.OpenAI, http: httpx.Client, part: dict[str, Any], kind: str
) -> None:
    content = [{"type": "text", "text": f"What is this? {SENTINEL}"}, part]
    body = {"model": CHAT_MODEL, "messages": [{"role": "user", "content": content}], "max_tokens": 2}
    error = envelope(http.post(CHAT, json=body), 400)
    part_param = "messages[0].content[1]" + (".image_url" if kind == "image" else "")  # the image's own field
    assert (error["type"], error["param"]) == ("invalid_request_error", part_param)
    assert f"does not accept {kind} input" in error["message"]
    answer = client.chat.completions.create(
        model=CHAT_MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=2
    )
    assert answer.choices[0].message.content is not None  # the server still answers
