"""What ``guard.RequestGuard`` tells requests still running when the shutdown grace ends: never a bare cut.

Driven over raw ASGI through ``create_app`` with a scripted engine that stalls after its first step, and a client
that never leaves; ``Drain.begin(0)`` ends the grace at once.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import prometheus_client
import pytest
from starlette.types import Message

from openai_routes.app import create_app
from openai_routes.core.limits import Limits
from openai_routes.core.metrics import ServerMetrics
from openai_routes.server.auth import KeyRing
from openai_routes.server.guard import Drain
from openai_routes.store.book import ResponseBook
from tests.unit.fakes import CHAT_MODEL, FakeEmbedEngine, FakeGenerateEngine, fake_registry, http_scope

KEY = "sk-unit-test-key"
USER = [{"role": "user", "content": "Hi"}]


async def cut_by_the_grace(path: str, body: dict[str, Any], generator: FakeGenerateEngine) -> list[Message]:
    """Run one request until the engine has produced its first step, then end the grace; return what was sent."""
    keyring = KeyRing()
    keyring.set_keys([KEY])
    drain = Drain()
    metrics = ServerMetrics.for_registry(prometheus_client.CollectorRegistry())
    app = create_app(
        fake_registry(generator, FakeEmbedEngine()), keyring, Limits(), metrics, drain, ResponseBook(stale_after=660)
    )
    sent: list[Message] = []
    received = False

    async def receive() -> Message:
        nonlocal received
        if not received:
            received = True
            return {"type": "http.request", "body": json.dumps(body).encode(), "more_body": False}
        await asyncio.Event().wait()  # the client stays
        raise AssertionError("unreachable")

    async def send(message: Message) -> None:
        sent.append(message)

    request = asyncio.create_task(app(http_scope(path, KEY), receive, send))
    while not generator.calls or generator.calls[0].steps < 1:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)  # the first chunk goes out
    drain.begin(0)
    await asyncio.wait_for(request, timeout=2)
    assert generator.num_in_flight() == 0, "the engine request outlived its answer"
    return sent


def body_of(sent: list[Message]) -> bytes:
    return b"".join(message.get("body", b"") for message in sent if message["type"] == "http.response.body")


@pytest.mark.parametrize("path", ["/chat/completions", "/completions"])
async def test_a_stream_cut_by_the_grace_ends_with_an_error_frame_then_done(path: str) -> None:
    generator = FakeGenerateEngine(hold=asyncio.Event())
    sent = await cut_by_the_grace(
        path, {"model": CHAT_MODEL, "messages": USER, "prompt": "x", "stream": True}, generator
    )
    assert sent[0]["status"] == 200
    assert sent[-1] == {"type": "http.response.body", "body": sent[-1]["body"], "more_body": False}
    frames = body_of(sent).decode().split("\n\n")
    assert frames[-2:] == ["data: [DONE]", ""]
    error = json.loads(frames[-3].removeprefix("data: "))["error"]
    assert (error["type"], error["code"]) == ("server_error", "service_unavailable")
    assert "shutting down" in error["message"]
    assert "Hello" in frames[0], "the stream had started"


async def test_a_responses_stream_cut_by_the_grace_ends_with_its_numbered_error_event() -> None:
    """The Responses API's own framing: an ``event: error`` numbered after the last event, and no ``[DONE]``."""
    generator = FakeGenerateEngine(hold=asyncio.Event())
    sent = await cut_by_the_grace(
        "/responses", {"model": CHAT_MODEL, "input": "Hi", "stream": True, "store": False}, generator
    )
    assert sent[0]["status"] == 200
    raw = body_of(sent).decode()
    assert "[DONE]" not in raw and raw.endswith("\n\n")
    events = [frame.split("\n") for frame in raw.strip().split("\n\n") if not frame.startswith(":")]
    kinds = [lines[0].removeprefix("event: ") for lines in events]
    payloads = [json.loads(lines[1].removeprefix("data: ")) for lines in events]
    assert kinds[0] == "response.created" and "response.output_text.delta" in kinds and kinds[-1] == "error"
    assert [p["sequence_number"] for p in payloads] == list(range(len(payloads)))
    assert payloads[-1]["code"] == "service_unavailable" and "shutting down" in payloads[-1]["message"]


async def test_a_waiting_request_cut_by_the_grace_gets_a_503_with_retry_after() -> None:
    generator = FakeGenerateEngine(hold=asyncio.Event())
    sent = await cut_by_the_grace("/chat/completions", {"model": CHAT_MODEL, "messages": USER}, generator)
    start = sent[0]
    assert start["status"] == 503
    headers = {name.decode(): value.decode() for name, value in start["headers"]}
    assert int(headers["retry-after"]) > 0
    error = json.loads(body_of(sent))["error"]
    assert (error["type"], error["code"]) == ("server_error", "service_unavailable")
    assert sent[-1].get("more_body", False) is False
