"""Request deadlines, on a server with a 10-second deadline (``tests/configs/generation-defaults.yaml``, shared with
the generation-defaults and open playground tests): a request still generating after 10 s is aborted in the engine
and answered 504 (``code: timeout``), or ends with an error frame when streamed."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.e2e.conftest import CHAT_MODEL
from tests.e2e.pool import ServerPool
from tests.e2e.probes import (
    endless_body,
    envelope,
    error_frames,
    sse_payloads,
    wait_engine_idle,
)
from tests.e2e.server import Server

DEADLINE = 10.0
CHAT = "/v1/chat/completions"
MESSAGES: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "Write a long story about a lighthouse keeper."}
]


@pytest.fixture(scope="module")
def deadline_server(pool: ServerPool) -> Server:
    return pool.get("generation-defaults")


@pytest.fixture(scope="module")
def deadline_http(deadline_server: Server) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {deadline_server.api_key}"}
    with httpx.Client(base_url=deadline_server.base_url, headers=headers, timeout=120) as session:
        yield session


def test_deadline_answers_504_and_aborts_the_engine_request(
    deadline_server: Server, deadline_http: httpx.Client
) -> None:
    started = time.monotonic()
    response = deadline_http.post(CHAT, json=endless_body(CHAT_MODEL))
    elapsed = time.monotonic() - started
    error = envelope(response, 504)
    assert error["type"] == "server_error" and error["code"] == "timeout"
    idle = wait_engine_idle(deadline_server, CHAT_MODEL, timeout=10)
    print(f"\ndeadline: 504 after {elapsed:.1f} s, engine idle {idle:.1f} s later")
    assert DEADLINE - 0.5 <= elapsed < DEADLINE + 15


def test_deadline_ends_a_stream_with_an_error_frame_then_done(
    deadline_server: Server, deadline_http: httpx.Client
) -> None:
    started = time.monotonic()
    with deadline_http.stream("POST", CHAT, json=endless_body(CHAT_MODEL, stream=True)) as response:
        assert response.status_code == 200
        payloads = sse_payloads(response.iter_lines())
    elapsed = time.monotonic() - started
    assert payloads[-1] == "[DONE]"
    errors = error_frames(payloads)
    assert len(errors) == 1 and errors[0]["code"] == "timeout", errors
    assert "error" in json.loads(payloads[-2]), "the error frame is the last event before [DONE]"
    assert len(payloads) > 3, "the stream had started before the deadline"
    idle = wait_engine_idle(deadline_server, CHAT_MODEL, timeout=10)
    print(f"\ndeadline: stream ended with an error frame after {elapsed:.1f} s, engine idle {idle:.1f} s later")
    assert DEADLINE - 0.5 <= elapsed < DEADLINE + 15


def test_deadline_raises_api_error_from_the_sdk_stream(deadline_server: Server) -> None:
    client = openai.OpenAI(
        base_url=f"{deadline_server.base_url}/v1", api_key=deadline_server.api_key, max_retries=0, timeout=60
    )
    stream = client.chat.completions.create(
        model=CHAT_MODEL, messages=MESSAGES, max_tokens=1500, stream=True, extra_body={"ignore_eos": True}
    )
    with pytest.raises(openai.APIError) as info:
        for _ in stream:
            pass
    assert not isinstance(info.value, openai.APIConnectionError)
    assert info.value.code == "timeout"
    wait_engine_idle(deadline_server, CHAT_MODEL, timeout=10)
