"""``/tokenize`` and ``/detokenize`` through ``create_root_app`` with the scripted engines (no vLLM, no server).

The fake tokenizer is one token per character (id = code point), so the expected ids are easy to write down.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from openai_routes.app import create_root_app
from openai_routes.core.engine import EngineInputError
from openai_routes.core.limits import Limits
from openai_routes.core.registry import ModelRegistry, ServedModel
from openai_routes.server.auth import KeyRing
from openai_routes.server.guard import Drain
from tests.unit.fakes import (
    CHAT_ALIAS,
    CHAT_MODEL,
    EMBED_MODEL,
    FakeEmbedEngine,
    FakeGenerateEngine,
    build_app,
    chat_prompt,
    fake_registry,
)

KEY = "sk-unit-test-key"
USER = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
VOCAB = 0x110000  # the fake's character ids; beyond them only generated pieces, which a client cannot name


class VocabEngine(FakeGenerateEngine):
    """Refuses ids outside its vocabulary as the vLLM engine does (with the completions' ``param``)."""

    async def decode(self, token_ids: Sequence[int]) -> str:
        if any(token >= VOCAB for token in token_ids):
            raise EngineInputError(f"Token ids must be in [0, {VOCAB}).", "prompt")
        return await super().decode(token_ids)


@dataclass
class Harness:
    root: httpx.AsyncClient
    v1: httpx.AsyncClient
    generator: FakeGenerateEngine
    embedder: FakeEmbedEngine


@asynccontextmanager
async def serve(limits: Limits | None = None, registry: ModelRegistry | None = None) -> AsyncIterator[Harness]:
    """The root app, and the ``/v1`` app over the same engines (to compare counts with chat and completions)."""
    generator, embedder = VocabEngine(context=128), FakeEmbedEngine(context=32)
    registry = registry or fake_registry(generator, embedder)
    keyring = KeyRing()
    keyring.set_keys([KEY])
    limits = limits or Limits()
    headers = {"Authorization": f"Bearer {KEY}"}
    root = create_root_app(registry, keyring, limits, Drain())
    v1 = build_app(registry, keyring, limits)
    async with (
        httpx.AsyncClient(transport=httpx.ASGITransport(root), base_url="http://test", headers=headers) as root_client,
        httpx.AsyncClient(transport=httpx.ASGITransport(v1), base_url="http://test", headers=headers) as v1_client,
    ):
        yield Harness(root_client, v1_client, generator, embedder)


@pytest.fixture
async def h() -> AsyncIterator[Harness]:
    async with serve() as harness:
        yield harness


def error_of(response: httpx.Response, status: int, param: str | None, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert list(body) == ["error"] and set(body["error"]) == {"message", "type", "param", "code"}
    assert (body["error"]["param"], body["error"]["code"]) == (param, code), body
    error: dict[str, Any] = body["error"]
    return error


# --- /tokenize ------------------------------------------------------------------------------------------------


async def test_prompt_shape_and_count_equal_completions_usage(h: Harness) -> None:
    response = await h.root.post("/tokenize", json={"model": CHAT_MODEL, "prompt": "Hello"})
    assert response.status_code == 200, response.text
    hello = [ord(c) for c in "Hello"]
    assert response.json() == {"count": 5, "max_model_len": 128, "tokens": hello, "token_strs": None}
    completion = await h.v1.post("/completions", json={"model": CHAT_MODEL, "prompt": "Hello", "max_tokens": 1})
    assert completion.json()["usage"]["prompt_tokens"] == response.json()["count"]


async def test_messages_count_equal_chat_usage(h: Harness) -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    response = await h.root.post("/tokenize", json={"model": CHAT_ALIAS, "messages": USER, "tools": tools})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["tokens"] == [ord(c) for c in chat_prompt(USER)] and body["count"] == len(body["tokens"])
    chat = await h.v1.post("/chat/completions", json={"model": CHAT_MODEL, "messages": USER, "tools": tools})
    assert chat.json()["usage"]["prompt_tokens"] == body["count"]
    assert h.generator.rendered[0] == h.generator.rendered[1]  # the same conversation reached the template


async def test_embedding_model_tokenizes_prompts_with_its_own_length(h: Harness) -> None:
    response = await h.root.post("/tokenize", json={"model": EMBED_MODEL, "prompt": "abc"})
    assert (response.json()["count"], response.json()["max_model_len"]) == (3, 32)
    refused = await h.root.post("/tokenize", json={"model": EMBED_MODEL, "messages": USER})
    error_of(refused, 400, "model", "model_not_supported")


async def test_model_defaults_to_the_first_chat_model(h: Harness) -> None:
    response = await h.root.post("/tokenize", json={"prompt": "x"})
    assert response.json()["max_model_len"] == 128
    registry = ModelRegistry()
    registry.add(ServedModel(EMBED_MODEL, "embed", FakeEmbedEngine()))
    async with serve(registry=registry) as embed_only:
        error_of(await embed_only.root.post("/tokenize", json={"prompt": "x"}), 400, "model")


async def test_unknown_model_is_404(h: Harness) -> None:
    response = await h.root.post("/tokenize", json={"model": "org/none", "prompt": "x"})
    error_of(response, 404, "model", "model_not_found")


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({}, "messages"),
        ({"prompt": "x", "messages": USER}, "messages"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "user"}]}, "messages[0]"),
        ({"prompt": 7}, "prompt"),
        ({"messages": USER, "add_generation_prompt": False}, "add_generation_prompt"),
        ({"messages": USER, "continue_final_message": True}, "continue_final_message"),
        ({"messages": USER, "add_special_tokens": True}, "add_special_tokens"),
        ({"prompt": "x", "return_token_strs": True}, "return_token_strs"),
        ({"model": "", "prompt": "x"}, "model"),
    ],
)
async def test_bad_bodies_are_400_with_param(h: Harness, body: dict[str, Any], param: str) -> None:
    secret = "sk-do-not-echo"
    response = await h.root.post("/tokenize", json={"model": CHAT_MODEL, **body, "user": secret})
    error_of(response, 400, param)
    assert secret not in response.text


async def test_vllm_defaults_are_accepted(h: Harness) -> None:
    defaults = {"add_generation_prompt": True, "continue_final_message": False, "return_token_strs": False}
    response = await h.root.post("/tokenize", json={"messages": USER, "add_special_tokens": False, **defaults})
    assert response.json()["count"] == len(chat_prompt(USER))
    plain = await h.root.post("/tokenize", json={"prompt": "ab", "add_special_tokens": False})
    assert plain.json()["tokens"] == [97, 98]


async def test_message_cap_applies() -> None:
    async with serve(Limits(max_messages=1)) as h:
        error_of(await h.root.post("/tokenize", json={"messages": USER}), 400, "messages")


# --- /detokenize ----------------------------------------------------------------------------------------------


async def test_round_trip(h: Harness) -> None:
    tokens = (await h.root.post("/tokenize", json={"prompt": "héllo"})).json()["tokens"]
    response = await h.root.post("/detokenize", json={"model": CHAT_MODEL, "tokens": tokens})
    assert response.status_code == 200, response.text
    assert response.json() == {"prompt": "héllo"}


@pytest.mark.parametrize("tokens", [[VOCAB + 5], [104, 2**63], [-1], [2**70]])
async def test_ids_outside_the_vocabulary_are_400_on_tokens(h: Harness, tokens: list[int]) -> None:
    response = await h.root.post("/detokenize", json={"tokens": tokens})
    error = error_of(response, 400, "tokens")
    assert str(tokens[-1]) not in error["message"]


async def test_detokenize_needs_a_chat_model(h: Harness) -> None:
    response = await h.root.post("/detokenize", json={"model": EMBED_MODEL, "tokens": [1]})
    error_of(response, 400, "model", "model_not_supported")


# --- the root app's protection --------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/tokenize", "/detokenize"])
async def test_key_required(h: Harness, path: str) -> None:
    for authorization in ("Bearer wrong", ""):
        response = await h.root.post(path, json={"prompt": "x"}, headers={"Authorization": authorization})
        error_of(response, 401, None, "invalid_api_key")


async def test_body_cap_and_method_are_enforced() -> None:
    async with serve(Limits(max_body_bytes=1024)) as h:
        error_of(await h.root.post("/tokenize", json={"prompt": "x" * 2048}), 413, None, "request_too_large")
        error_of(await h.root.get("/tokenize"), 405, None, "method_not_allowed")


async def test_not_json_is_400(h: Harness) -> None:
    response = await h.root.post("/tokenize", content=b'{"prompt": NaN}', headers={"content-type": "application/json"})
    error_of(response, 400, None)
