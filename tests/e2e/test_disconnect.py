"""A client that goes away aborts its generation in the engine, streamed or not.

The proof is the engine's own count of unfinished requests (``bento_oai_engine_requests_running`` on
``/metrics``), polled until it is back to 0: each request here would otherwise generate 1500 tokens, for a
minute or more on this CPU.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import socket
import time
from typing import Any

import httpx
import openai
import pytest

from tests.e2e.conftest import CHAT_MODEL
from tests.e2e.probes import engine_running, engine_running_in, wait_engine_idle, wait_for
from tests.e2e.server import Server

MESSAGES = [{"role": "user", "content": "Write a very long story about a lighthouse keeper."}]
LONG = {"model": CHAT_MODEL, "messages": MESSAGES, "max_tokens": 1500}
ABORT_WITHIN = 10  # seconds; the engine drops an aborted request within a step or two


def long_sdk_call() -> dict[str, Any]:
    return {**LONG, "extra_body": {"ignore_eos": True}}


def assert_serves_normally(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model=CHAT_MODEL, messages=[{"role": "user", "content": "Say hi."}], max_tokens=8, temperature=0
    )
    assert reply.choices[0].finish_reason in ("stop", "length")
    assert reply.choices[0].message.content
    assert reply.usage is not None and 0 < reply.usage.completion_tokens <= 8


def test_dropped_stream_is_aborted_in_the_engine(server: Server, client: openai.OpenAI) -> None:
    wait_engine_idle(server, CHAT_MODEL, timeout=60)
    sent = time.monotonic()
    stream = client.chat.completions.create(**long_sdk_call(), stream=True)
    arrivals = [f"headers {time.monotonic() - sent:.2f} s"]
    received = []
    for chunk, _ in zip(stream, range(3), strict=False):
        received.append(chunk)
        arrivals.append(f"chunk {time.monotonic() - sent:.2f} s")
    assert len(received) == 3 and received[0].choices[0].delta.role == "assistant"
    # A stream that arrives only once the engine is done fails here: its timings and the server's log tell why.
    assert engine_running(server.base_url, CHAT_MODEL) == 1, f"{arrivals}\n{server.log_tail()}"
    stream.close()
    freed = wait_engine_idle(server, CHAT_MODEL, timeout=ABORT_WITHIN)
    print(f"\ndisconnect: dropped stream freed in the engine {freed:.2f} s after the client closed it")
    assert_serves_normally(client)


async def watch_engine(base_url: str, running: list[int], stop: asyncio.Event) -> None:
    """Record the engine gauge until ``stop`` is set."""
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as session:
        while not stop.is_set():
            running.append(engine_running_in((await session.get("/metrics")).text, CHAT_MODEL))
            await asyncio.sleep(0.1)


async def test_cancelled_non_streamed_request_is_aborted_in_the_engine(
    server: Server, aclient: openai.AsyncOpenAI, client: openai.OpenAI
) -> None:
    wait_engine_idle(server, CHAT_MODEL, timeout=60)
    running: list[int] = []
    stop = asyncio.Event()
    watcher = asyncio.create_task(watch_engine(server.base_url, running, stop))
    request = asyncio.create_task(aclient.chat.completions.create(**long_sdk_call()))
    started = time.monotonic()
    while not running or running[-1] == 0:
        assert time.monotonic() - started < 60 and not request.done(), "the request never reached the engine"
        await asyncio.sleep(0.05)
    request.cancel()  # the SDK call is abandoned: its connection is closed mid-response
    await asyncio.gather(request, return_exceptions=True)
    cancelled = time.monotonic()
    while running[-1] != 0:
        assert time.monotonic() - cancelled < ABORT_WITHIN, "the cancelled request still runs in the engine"
        await asyncio.sleep(0.05)
    freed = time.monotonic() - cancelled
    stop.set()
    await watcher
    print(f"\ndisconnect: cancelled request freed in the engine {freed:.2f} s after the client gave up")
    assert_serves_normally(client)


def test_read_timeout_of_a_non_streamed_request_is_aborted_in_the_engine(server: Server, client: openai.OpenAI) -> None:
    """A client with a short read timeout (the common way to give up): the server sees the socket close."""
    wait_engine_idle(server, CHAT_MODEL, timeout=60)
    short = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=server.api_key, max_retries=0, timeout=5)
    started = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        short.chat.completions.create(**long_sdk_call())
    gave_up = time.monotonic()
    assert gave_up - started >= 5
    freed = wait_for(
        lambda: engine_running(server.base_url, CHAT_MODEL) == 0, ABORT_WITHIN, "the timed-out request aborted"
    )
    print(f"\ndisconnect: timed-out request freed in the engine {freed:.2f} s after the client gave up")
    assert_serves_normally(client)


def send_then_hang_up(server: Server, path: str, body: dict[str, Any], wait: float, read_bytes: int) -> None:
    """POST over a raw socket; hang up after ``wait`` seconds, or once ``read_bytes`` bytes arrived if sooner."""
    payload = json.dumps(body).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {server.api_key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(head + payload)
        if wait == 0:
            return  # gone before the server has even read the request
        sock.settimeout(wait)
        received = 0
        with contextlib.suppress(TimeoutError):
            while received < read_bytes and (chunk := sock.recv(min(4096, read_bytes - received))):
                received += len(chunk)


@pytest.mark.slow
@pytest.mark.stress
def test_a_hundred_disconnects_at_random_points_leave_nothing_running(server: Server) -> None:
    """Before the first step, between it and the first body byte, mid-stream, mid-body: every time the engine's
    running count returns to 0."""
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    wait_engine_idle(server, CHAT_MODEL, timeout=60)
    slowest = 0.0
    for attempt in range(100):
        stream = attempt % 2 == 0
        path, body = (
            ("/v1/chat/completions", {**LONG, "ignore_eos": True})
            if attempt % 4 < 2
            else ("/v1/completions", {"model": CHAT_MODEL, "prompt": ["Once", "upon a time"], "max_tokens": 1500})
        )
        wait = rng.choice([0.0, rng.uniform(0, 0.05), rng.uniform(0, 0.6)])
        send_then_hang_up(server, path, {**body, "stream": stream}, wait, rng.randrange(1, 2000))
        try:
            slowest = max(slowest, wait_engine_idle(server, CHAT_MODEL, timeout=ABORT_WITHIN))
        except AssertionError as failure:
            raise AssertionError(
                f"attempt {attempt} (seed {seed}, {path}, stream={stream}, wait {wait:.3f} s)"
            ) from failure
    print(f"\n100 random disconnects (seed {seed}): the engine was idle again within {slowest:.2f} s each time")
