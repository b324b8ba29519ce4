"""``POST /tokenize`` and ``POST /detokenize`` at the server's root (vLLM's paths) on the real service.

Counts are checked against what the same input costs on the OpenAI endpoints (``usage.prompt_tokens``) and
against the model's own tokenizer, read from the BentoML store.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any

import httpx
import openai
import pytest

from openai_routes.pipeline import tool_format
from openai_routes.protocol.tools import ChatCompletionTool
from settings import load_config
from tests.e2e.conftest import CHAT_MODEL
from tests.e2e.probes import envelope, server_log
from tests.e2e.server import Server
from tests.e2e.test_log_hygiene import access_line

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

EMBED_MODEL = "all-minilm-l6-v2"
TEXT = "The quick brown fox jumps over the lazy dog, twice."
MESSAGES: list[dict[str, Any]] = [
    {"role": "system", "content": "You answer in one word."},
    {"role": "user", "content": "What colour is the sky?"},
    {"role": "assistant", "content": "Blue."},
    {"role": "user", "content": "And grass?"},
]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def tokenize(http: httpx.Client, **body: Any) -> dict[str, Any]:
    response = http.post("/tokenize", json=body)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    assert set(result) == {"count", "max_model_len", "tokens", "token_strs"}
    assert result["count"] == len(result["tokens"]) and all(isinstance(t, int) for t in result["tokens"])
    return result


def configured_context() -> int:
    [chat] = [model for model in load_config().models if model.id == CHAT_MODEL]
    return int(chat.engine["max_model_len"])


def test_prompt_count_is_what_a_completion_costs(
    http: httpx.Client, client: openai.OpenAI, tokenizer: PreTrainedTokenizerBase
) -> None:
    result = tokenize(http, model=CHAT_MODEL, prompt=TEXT)
    assert result["tokens"] == tokenizer(TEXT)["input_ids"]
    assert result["max_model_len"] == configured_context() == 2048
    completion = client.completions.create(model=CHAT_MODEL, prompt=TEXT, max_tokens=1)
    assert completion.usage is not None and completion.usage.prompt_tokens == result["count"]


@pytest.mark.parametrize("tools", [None, [WEATHER]], ids=["messages", "messages-and-tools"])
def test_messages_count_is_what_a_chat_costs(
    http: httpx.Client, client: openai.OpenAI, tokenizer: PreTrainedTokenizerBase, tools: list[Any] | None
) -> None:
    extra = {"tools": tools} if tools else {}
    result = tokenize(http, model=CHAT_MODEL, messages=MESSAGES, **extra)
    # SmolLM2's template ignores tools: they come as the system preamble of the generic tool format.
    validated = [ChatCompletionTool.model_validate(tool) for tool in tools or []]
    conversation = tool_format.with_preamble(MESSAGES, validated) if tools else MESSAGES
    rendered = tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
    assert result["tokens"] == tokenizer.encode(str(rendered), add_special_tokens=False)
    chat = client.chat.completions.create(model=CHAT_MODEL, messages=MESSAGES, max_tokens=1, **extra)  # type: ignore[call-overload]
    assert chat.usage is not None and chat.usage.prompt_tokens == result["count"]


def test_embedding_model_counts_as_its_embeddings_cost(http: httpx.Client, client: openai.OpenAI) -> None:
    result = tokenize(http, model=EMBED_MODEL, prompt=TEXT)
    embedding = client.embeddings.create(model=EMBED_MODEL, input=TEXT)
    assert embedding.usage.prompt_tokens == result["count"]
    listed = client.models.retrieve(EMBED_MODEL).model_extra or {}
    assert result["max_model_len"] == listed["max_model_len"] < configured_context()


def test_model_may_be_left_out(http: httpx.Client) -> None:
    assert tokenize(http, prompt=TEXT) == tokenize(http, model=CHAT_MODEL, prompt=TEXT)
    detokenized = http.post("/detokenize", json={"tokens": tokenize(http, prompt=TEXT)["tokens"]})
    assert detokenized.json() == {"prompt": TEXT}


def test_round_trip(http: httpx.Client, tokenizer: PreTrainedTokenizerBase) -> None:
    text = "Ünïcödé, emoji 🦊 and\nnew lines."
    tokens = tokenize(http, model=CHAT_MODEL, prompt=text, add_special_tokens=False)["tokens"]
    assert tokens == tokenizer.encode(text, add_special_tokens=False)
    response = http.post("/detokenize", json={"model": CHAT_MODEL, "tokens": tokens})
    assert response.status_code == 200, response.text
    assert response.json() == {"prompt": text}


def test_ids_outside_the_vocabulary_are_400_on_tokens(http: httpx.Client, tokenizer: PreTrainedTokenizerBase) -> None:
    for bad in (len(tokenizer) + 7, -3, 2**64):
        response = http.post("/detokenize", json={"model": CHAT_MODEL, "tokens": [1, bad]})
        error = envelope(response, 400)
        assert error["param"] == "tokens", error
        assert str(bad) not in error["message"]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": CHAT_MODEL}, "messages"),
        ({"model": CHAT_MODEL, "prompt": TEXT, "messages": MESSAGES}, "messages"),
        ({"model": CHAT_MODEL, "messages": MESSAGES, "add_generation_prompt": False}, "add_generation_prompt"),
        ({"model": CHAT_MODEL, "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, None),
        ({"model": "org/no-such-model", "prompt": TEXT}, "model"),
        ({"model": EMBED_MODEL, "messages": MESSAGES}, "model"),
    ],
)
def test_bad_requests_are_openai_errors(http: httpx.Client, body: dict[str, Any], param: str | None) -> None:
    response = http.post("/tokenize", json=body)
    assert response.status_code in (400, 404)
    error = envelope(response, response.status_code)
    if param is not None:
        assert error["param"] == param, error
    else:
        assert error["param"] and error["param"].startswith("messages[0]"), error
    assert TEXT not in response.text and "sky" not in response.text


@pytest.mark.parametrize("path", ["/tokenize", "/detokenize"])
def test_key_required(server: Server, path: str) -> None:
    body = {"model": CHAT_MODEL, "prompt": TEXT, "tokens": [1]}
    for headers in ({}, {"Authorization": "Bearer sk-wrong"}):
        response = httpx.post(f"{server.base_url}{path}", json=body, headers=headers, timeout=30)
        assert envelope(response, 401)["code"] == "invalid_api_key"


def test_access_line_and_request_id(server: Server, http: httpx.Client) -> None:
    request_id = f"tok-{secrets.token_hex(8)}"
    response = http.post("/tokenize", json={"model": CHAT_MODEL, "prompt": TEXT}, headers={"x-request-id": request_id})
    assert response.headers["x-request-id"] == request_id
    line = access_line(server, request_id)
    assert "path=/tokenize status=200" in line and f"model={CHAT_MODEL}" in line
    assert TEXT not in server_log(server)


def test_the_rest_of_the_root_is_unchanged(server: Server, http: httpx.Client) -> None:
    for path in ("/livez", "/readyz", "/metrics"):
        assert httpx.get(f"{server.base_url}{path}", timeout=30).status_code == 200, path
    assert envelope(http.get("/tokenize"), 405)["code"] == "method_not_allowed"
    assert envelope(http.post("/v1/tokenize", json={"prompt": TEXT}), 404)["code"] == "not_found"
    assert http.get("/v1/models").status_code == 200
