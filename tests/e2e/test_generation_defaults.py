"""The model's ``generation_config.json`` decides what a silent request gets, as with ``vllm serve``.

The server of this module serves a copy of the default chat model whose ``generation_config.json`` is greedy
(``top_k: 1`` at ``temperature: 1.0``): the copy links the store's files and writes its own generation config,
and the config (``tests/configs/generation-defaults.yaml``) is rewritten to serve it from that path
(``tests.e2e.servers.greedy_config``; the playground's no-key, deadline and Hermes tests share it). Requests that set
nothing answer as at temperature 0; a request that sets ``top_k`` itself samples."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from tests.e2e.conftest import CHAT_MODEL
from tests.e2e.pool import ServerPool
from tests.e2e.probes import server_log
from tests.e2e.server import Server

MESSAGES: list[Any] = [{"role": "user", "content": "Write a short poem about the sea."}]
PROMPT = "Once upon a time, in a small village by the sea,"


@pytest.fixture(scope="module")
def greedy_server(pool: ServerPool) -> Server:
    return pool.get("generation-defaults")


@pytest.fixture(scope="module")
def greedy_client(greedy_server: Server) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{greedy_server.base_url}/v1", api_key=greedy_server.api_key, max_retries=0, timeout=120
    )


def chat(client: openai.OpenAI, **extra: Any) -> str:
    reply = client.chat.completions.create(model=CHAT_MODEL, messages=MESSAGES, max_tokens=24, **extra)
    return reply.choices[0].message.content or ""


def test_a_silent_request_is_greedy_from_the_models_file(greedy_client: openai.OpenAI) -> None:
    answers = {chat(greedy_client) for _ in range(3)}
    assert len(answers) == 1, answers
    assert answers == {chat(greedy_client, temperature=0)}


def test_completions_take_the_same_defaults(greedy_client: openai.OpenAI) -> None:
    def complete(**extra: Any) -> str:
        reply = greedy_client.completions.create(model=CHAT_MODEL, prompt=PROMPT, max_tokens=24, **extra)
        return str(reply.choices[0].text)

    assert complete() == complete(seed=1) == complete(temperature=0)


def test_a_request_that_sets_top_k_samples(greedy_client: openai.OpenAI) -> None:
    answers = {chat(greedy_client, temperature=1, seed=seed, extra_body={"top_k": 50}) for seed in range(4)}
    assert len(answers) > 1, answers


def test_the_effective_defaults_are_logged_once(greedy_server: Server) -> None:
    logged = f"{CHAT_MODEL}: sampling defaults for requests"
    lines = [line for line in server_log(greedy_server).splitlines() if logged in line]
    assert len(lines) == 1, lines
    assert "'top_k': 1" in lines[0] and "'temperature': 1.0" in lines[0]
