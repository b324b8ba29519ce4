"""Backpressure, request limits and hostile input, on a server with small limits.

``tests/configs/limited.yaml`` serves the chat model only, with 2 requests in flight plus 2 queued (429 with
``Retry-After: 2`` beyond), ``max_tokens`` <= 128, ``n`` <= 2 and 64 KiB bodies. The same server serves the fuzz
sample through the real engine (``test_fuzz.py``) and then has its engine killed (``test_engine_death.py``, marked
``ends_server``: it runs after them).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import pytest

from tests.e2e.conftest import CHAT_MODEL
from tests.e2e.limited import CHAT, MAX_BODY, MAX_TOKENS, long_body, long_sdk_call, sdk, short_body
from tests.e2e.probes import (
    endless_response,
    engine_running,
    engine_running_in,
    envelope,
    requests_queued,
    wait_engine_idle,
    wait_for,
)
from tests.e2e.server import Server

RETRY_AFTER = "2"
ADMITTED = 4  # max_in_flight 2 + max_queued 2


# --- admission control ---------------------------------------------------------------------------------------


@dataclass
class Timed:
    response: httpx.Response
    seconds: float


async def timed_post(session: httpx.AsyncClient, body: dict[str, Any]) -> Timed:
    started = time.monotonic()
    response = await session.post(CHAT, json=body)
    return Timed(response, time.monotonic() - started)


async def probe_while_saturated(session: httpx.AsyncClient, model: str) -> dict[str, tuple[int, float]]:
    """Status and seconds of the health, metrics and model-list endpoints; also the engine gauge."""
    answers: dict[str, tuple[int, float]] = {}
    for path in ("/livez", "/readyz", "/metrics", "/v1/models"):
        started = time.monotonic()
        response = await session.get(path)
        answers[path] = (response.status_code, time.monotonic() - started)
        if path == "/metrics":
            running = engine_running_in(response.text, model)
            assert 1 <= running <= 2, f"the engine runs {running} requests; the in-flight cap is 2"
    return answers


@pytest.mark.stress
async def test_saturation_gives_exactly_four_200s_and_six_fast_429s(limited: Server) -> None:
    headers = {"Authorization": f"Bearer {limited.api_key}"}
    pool = httpx.Limits(max_connections=32, max_keepalive_connections=32)
    async with httpx.AsyncClient(base_url=limited.base_url, headers=headers, timeout=120, limits=pool) as session:
        tasks = [asyncio.create_task(timed_post(session, long_body())) for _ in range(10)]
        try:
            started = time.monotonic()
            while sum(task.done() for task in tasks) < 10 - ADMITTED:
                assert time.monotonic() - started < 60, "the 429s did not come"
                await asyncio.sleep(0.05)
            assert not all(task.done() for task in tasks), "nothing left in flight: the test did not saturate"
            # The 429s come before the admitted requests have been rendered and submitted: wait until they have.
            await asyncio.to_thread(wait_for, lambda: engine_running(limited.base_url, CHAT_MODEL) >= 1, 30, "running")
            answers = await probe_while_saturated(session, CHAT_MODEL)
            with pytest.raises(openai.RateLimitError) as info:  # the SDK's view of the same answer, while saturated
                await openai.AsyncOpenAI(
                    base_url=f"{limited.base_url}/v1", api_key=limited.api_key, max_retries=0, timeout=60
                ).chat.completions.create(**long_sdk_call())
            still_saturated = not all(task.done() for task in tasks)
        finally:
            results = await asyncio.gather(*tasks)
    statuses = collections.Counter(result.response.status_code for result in results)
    ok = [result for result in results if result.response.status_code == 200]
    refused = [result for result in results if result.response.status_code == 429]
    print(
        f"\nbackpressure: {dict(statuses)}; 429s in {max(r.seconds for r in refused):.2f} s at most, "
        f"200s in {min(r.seconds for r in ok):.1f}-{max(r.seconds for r in ok):.1f} s; "
        + ", ".join(f"{path} {status} in {seconds:.2f} s" for path, (status, seconds) in answers.items())
    )
    assert statuses == {200: ADMITTED, 429: 10 - ADMITTED}
    for result in refused:
        error = envelope(result.response, 429)
        assert error["code"] == "rate_limit_exceeded"
        assert result.response.headers["retry-after"] == RETRY_AFTER
        assert result.seconds < 5
    assert max(r.seconds for r in refused) < min(r.seconds for r in ok), "a 429 waited for a generation"
    for result in ok:
        reply = result.response.json()
        assert reply["choices"][0]["finish_reason"] == "length"
        assert reply["usage"]["completion_tokens"] == MAX_TOKENS
    assert info.value.status_code == 429 and info.value.code == "rate_limit_exceeded"
    assert info.value.response.headers["retry-after"] == RETRY_AFTER
    assert still_saturated, "the SDK call came after the saturation ended"
    for path, (status, seconds) in answers.items():
        assert status == 200, path
        assert seconds < 5, f"{path} took {seconds:.1f} s under load"


@pytest.mark.stress
def test_capacity_is_back_after_saturation(limited: Server, limited_http: httpx.Client) -> None:
    wait_engine_idle(limited, CHAT_MODEL, timeout=30)
    assert limited_http.post(CHAT, json=short_body()).status_code == 200


def test_a_background_response_at_capacity_is_answered_at_once_queued(limited: Server) -> None:
    """With both running places taken, a background response is not held in its POST: it is answered queued, waits
    in the admission queue without its client, and starts when a place frees (a cancel here)."""
    wait_engine_idle(limited, CHAT_MODEL, timeout=30)
    client = sdk(limited)
    body = {**endless_response(background=True), "max_output_tokens": MAX_TOKENS}
    running = [client.responses.create(model=CHAT_MODEL, **body) for _ in range(2)]
    try:
        wait_for(lambda: engine_running(limited.base_url, CHAT_MODEL) == 2, 30, "both background runs in the engine")
        started = time.monotonic()
        queued = client.responses.create(model=CHAT_MODEL, **body)
        answered = time.monotonic() - started
        running.append(queued)
        print(f"\nbackground at capacity: answered {queued.status} in {answered:.2f} s")
        assert queued.status == "queued" and answered < 5
        assert client.responses.retrieve(queued.id).status == "queued"
        assert engine_running(limited.base_url, CHAT_MODEL) == 2
        assert client.responses.cancel(running[0].id).status == "cancelled"
        wait_for(lambda: client.responses.retrieve(queued.id).status == "in_progress", 30, "the queued one to start")
    finally:
        for response in running:
            with contextlib.suppress(openai.BadRequestError):  # already finished or cancelled
                client.responses.cancel(response.id)
    wait_engine_idle(limited, CHAT_MODEL, timeout=30)


async def test_admission_counts_engine_sequences_not_requests(limited: Server) -> None:
    """Room for 2 sequences plus 2 queued: a completion of 2 prompts fills the engine, a chat with n=2 fills the
    queue, and a third request gets 429 at once (counting requests, it would have been admitted)."""
    headers = {"Authorization": f"Bearer {limited.api_key}"}
    completion = {"model": CHAT_MODEL, "prompt": ["Once upon a time", "In a galaxy"], "max_tokens": MAX_TOKENS,
                  "ignore_eos": True}  # fmt: skip
    async with httpx.AsyncClient(base_url=limited.base_url, headers=headers, timeout=120) as session:
        running = asyncio.create_task(session.post("/v1/completions", json=completion))
        await asyncio.to_thread(wait_for, lambda: engine_running(limited.base_url, CHAT_MODEL) == 2, 30, "2 running")
        queued = asyncio.create_task(session.post(CHAT, json=short_body(n=2)))  # queued while the 2 prompts run
        await asyncio.to_thread(wait_for, lambda: requests_queued(limited.base_url, CHAT_MODEL) == 1, 30, "queued")
        refused = await session.post(CHAT, json=short_body())
        held = engine_running(limited.base_url, CHAT_MODEL)
        results = await asyncio.gather(running, queued)
    error = envelope(refused, 429)
    assert error["code"] == "rate_limit_exceeded"
    assert held == 2, f"the engine held {held} sequences; the cap is 2"
    assert [result.status_code for result in results] == [200, 200]
    assert len(results[1].json()["choices"]) == 2


# --- body size -----------------------------------------------------------------------------------------------


def oversized_body() -> bytes:
    body = {"model": CHAT_MODEL, "messages": [{"role": "user", "content": "a" * (MAX_BODY + 4096)}], "max_tokens": 4}
    return json.dumps(body).encode()


def test_oversized_chunked_body_is_413(limited_http: httpx.Client) -> None:
    def chunks() -> Iterator[bytes]:  # a generator: httpx sends it chunked, without Content-Length
        body = oversized_body()
        for start in range(0, len(body), 4096):
            yield body[start : start + 4096]

    response = limited_http.post(CHAT, content=chunks(), headers={"Content-Type": "application/json"})
    assert "content-length" not in response.request.headers
    assert envelope(response, 413)["code"] == "request_too_large"


def raw_post(server: Server, headers: list[str], payload: bytes, timeout: float = 60) -> tuple[int, bytes]:
    """POST over a bare socket (httpx refuses to send a body that contradicts its headers): status and body."""
    head = [f"POST {CHAT} HTTP/1.1", "Host: localhost", f"Authorization: Bearer {server.api_key}"]
    head += ["Content-Type: application/json", "Connection: close", *headers]
    with socket.create_connection((server.host, server.port), timeout=timeout) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # it may answer before reading it all
            sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + payload)
        received = b""
        while b"\r\n\r\n" not in received or len(received.partition(b"\r\n\r\n")[2]) < content_length(received):
            data = sock.recv(65536)
            if not data:
                break
            received += data
    status_line, _, rest = received.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


def content_length(received: bytes) -> int:
    for line in received.partition(b"\r\n\r\n")[0].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value.strip())
    return 1 << 30  # unknown: read until the server closes


def test_declared_length_is_not_trusted(limited: Server) -> None:
    """The body is counted as it arrives: a huge declared length gets 413 once 64 KiB have come, without
    waiting for the rest; a small lying length never lets more bytes in than it declares (they are not the
    body, so no 413 is possible: the truncated JSON is a 400); both framings at once are refused."""
    body = oversized_body()
    status, answer = raw_post(limited, ["Content-Length: 10000000"], body)
    assert status == 413 and json.loads(answer)["error"]["code"] == "request_too_large"
    status, answer = raw_post(limited, ["Content-Length: 100"], body)
    assert status == 400 and json.loads(answer)["error"]["type"] == "invalid_request_error"
    status, _ = raw_post(limited, ["Content-Length: 100", "Transfer-Encoding: chunked"], body)
    assert status == 400


# --- request limits ------------------------------------------------------------------------------------------


def many_messages(count: int) -> bytes:
    body = {"model": CHAT_MODEL, "messages": [{"role": "user", "content": "x"}] * count, "max_tokens": 4}
    raw = json.dumps(body, separators=(",", ":")).encode()
    assert len(raw) < MAX_BODY, "the body limit would answer first"
    return raw


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"n": 3}, "n"),
        ({"max_tokens": MAX_TOKENS + 1}, "max_tokens"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
    ],
    ids=["n", "max_tokens", "stop", "top_logprobs"],
)
def test_request_limits_are_400_with_param(limited_http: httpx.Client, fields: dict[str, Any], param: str) -> None:
    error = envelope(limited_http.post(CHAT, json=short_body(**fields)), 400)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param


def test_too_many_messages_is_400_with_param(limited_http: httpx.Client) -> None:
    response = limited_http.post(CHAT, content=many_messages(2049), headers={"Content-Type": "application/json"})
    assert envelope(response, 400)["param"] == "messages"


def test_limits_raise_bad_request_error_in_the_sdk(limited: Server) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        sdk(limited).chat.completions.create(**short_body(n=3))
    assert info.value.param == "n"
