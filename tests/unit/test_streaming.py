"""SSE framing, late errors as error frames, and priming a stream so early errors are plain HTTP errors."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, cast

import prometheus_client
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel
from starlette.types import Message

from openai_routes.core.engine import EngineInputError, EngineUnavailableError, GenerationStep, SamplingOptions
from openai_routes.core.errors import APIError
from openai_routes.core.metrics import ServerMetrics
from openai_routes.endpoints.completions.protocol import Completion, CompletionChoice
from openai_routes.pipeline.engine_steps import EngineSteps
from openai_routes.pipeline.run import RAW_TEXT, EngineInput, GenerationRun, RunSettings
from openai_routes.protocol.chat import ChatCompletionChunk, ChoiceDelta, ChunkChoice
from openai_routes.server.sse import (
    DATA_LINES,
    DONE,
    KEEPALIVE_FRAME,
    EventStream,
    KeepAlive,
    TextChunks,
    frame,
    sse_frames,
    sse_response,
)
from tests.unit.fakes import FakeGenerateEngine


class Event(BaseModel):
    n: int
    text: str = "é"


async def events(count: int, error: BaseException | None = None) -> AsyncGenerator[BaseModel, None]:
    for n in range(count):
        yield Event(n=n)
    if error is not None:
        raise error


async def collect(frames: AsyncIterator[bytes]) -> list[bytes]:
    return [chunk async for chunk in frames]


def payload(chunk: bytes) -> Any:
    assert chunk.startswith(b"data: ") and chunk.endswith(b"\n\n")
    return json.loads(chunk[6:-2])


def steps(engine: FakeGenerateEngine, max_tokens: int = 8) -> AsyncGenerator[GenerationStep, None]:
    return engine.generate([104, 105], SamplingOptions(max_tokens=max_tokens), "req-1")


def test_frame_is_one_data_line() -> None:
    assert frame(Event(n=1)) == b'data: {"n":1,"text":"\xc3\xa9"}\n\n'


async def test_frames_end_with_done() -> None:
    chunks = await collect(sse_frames(events(2), DATA_LINES))
    assert chunks == [frame(Event(n=0)), frame(Event(n=1)), b"data: [DONE]\n\n"]
    assert DONE == b"data: [DONE]\n\n"


async def test_empty_stream_is_just_done() -> None:
    assert await collect(sse_frames(events(0), DATA_LINES)) == [DONE]


@pytest.mark.parametrize(
    ("error", "status_type", "code"),
    [
        (APIError(400, "bad", code="x", param="p"), "invalid_request_error", "x"),
        (EngineInputError("bad input", param="prompt"), "invalid_request_error", None),
        (EngineUnavailableError("gone"), "server_error", "service_unavailable"),
        (RuntimeError("secret internals"), "server_error", None),
    ],
)
async def test_exception_mid_stream_becomes_an_error_frame_then_done(
    error: BaseException, status_type: str, code: str | None
) -> None:
    chunks = await collect(sse_frames(events(1, error), DATA_LINES))
    assert len(chunks) == 3
    assert chunks[0] == frame(Event(n=0))
    assert chunks[2] == DONE
    body = payload(chunks[1])
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert (body["error"]["type"], body["error"]["code"]) == (status_type, code)
    assert b"secret" not in chunks[1]


def test_sse_response_headers() -> None:
    async def close() -> None:
        pass

    response = sse_response(events(0), close)
    assert response.media_type == "text/event-stream"
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["cache-control"] == "no-cache"


ONE_REQUEST = [EngineInput([104, 105], SamplingOptions(max_tokens=8))]


def generation_run(engine: Any, timeout: float = 5) -> GenerationRun:
    metrics = ServerMetrics.for_registry(prometheus_client.CollectorRegistry())
    return GenerationRun(engine, "fake", ONE_REQUEST, RAW_TEXT, "req-1", RunSettings(timeout, metrics))


async def start(engine: FakeGenerateEngine, timeout: float = 5) -> EngineSteps:
    """How the routes prime a stream: the engine's first step is awaited before any response exists."""
    run = generation_run(engine, timeout)
    await run.start()
    return run.steps[0]


def assert_timed_out(error: APIError) -> None:
    assert (error.status, error.code) == (504, "timeout")


async def test_deadline_passing_while_waiting_for_a_step_aborts_the_engine_request() -> None:
    engine = FakeGenerateEngine(hold=asyncio.Event())  # never set: the engine stalls after its first step
    primed = await start(engine, timeout=0.2)
    await anext(primed)  # the first step, read by start
    started = time.monotonic()
    with pytest.raises(APIError) as raised:
        await anext(primed)
    assert_timed_out(raised.value)
    assert 0.1 < time.monotonic() - started < 2
    assert engine.calls[0].outcome == "cancelled"
    assert engine.num_in_flight() == 0


async def test_deadline_passing_between_steps_ends_the_stream_at_the_next_one() -> None:
    """A slow reader (the client) keeps the consumer away from the engine when the deadline passes."""
    engine = FakeGenerateEngine()
    primed = await start(engine, timeout=0.05)
    await anext(primed)
    await asyncio.sleep(0.1)
    with pytest.raises(APIError) as raised:
        await anext(primed)
    assert_timed_out(raised.value)
    assert engine.calls[0].outcome == "closed"
    assert engine.num_in_flight() == 0


async def test_deadline_at_the_first_step_is_a_plain_504() -> None:
    never = asyncio.Event()

    async def stall(*_args: object) -> AsyncGenerator[GenerationStep, None]:
        await never.wait()
        yield GenerationStep([], 0)

    slow = cast(Any, FakeGenerateEngine())
    slow.generate = stall
    with pytest.raises(APIError) as raised:
        await generation_run(slow, timeout=0.1).start()
    assert_timed_out(raised.value)


async def test_a_cancelled_wait_is_not_taken_for_a_timeout() -> None:
    """The client leaving cancels the request's task: that must stay a cancellation (no 504, no error frame)."""
    engine = FakeGenerateEngine(hold=asyncio.Event())
    primed = await start(engine, timeout=5)
    await anext(primed)
    waiting = asyncio.create_task(anext(primed))
    await asyncio.sleep(0.05)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert engine.calls[0].outcome == "cancelled"
    await primed.aclose()


async def test_generation_closed_before_its_deadline_leaves_no_timer_behind() -> None:
    engine = FakeGenerateEngine()
    request = generation_run(engine, timeout=0.05)
    await request.start()
    [primed] = request.steps
    await request.aclose()
    await asyncio.sleep(0.1)
    assert not primed.deadline.expired


async def test_start_runs_the_engine_to_its_first_step_only() -> None:
    engine = FakeGenerateEngine()
    primed = await start(engine)
    [call] = engine.calls
    assert (call.outcome, call.steps) == ("running", 1)
    texts = [step.choices[0].text async for step in primed]
    assert texts == ["Hello", ",", " world"]
    assert call.outcome == "finished"
    assert engine.num_in_flight() == 0


@pytest.mark.parametrize("error", [EngineInputError("too long", param="prompt"), EngineUnavailableError("dead")])
async def test_start_raises_early_errors(error: Exception) -> None:
    engine = FakeGenerateEngine(error=error)
    with pytest.raises(type(error)):
        await start(engine)
    assert engine.calls[0].steps == 0
    assert engine.num_in_flight() == 0


async def test_generation_yields_the_first_step_then_the_rest_and_aclose_closes_the_source() -> None:
    engine = FakeGenerateEngine()
    primed = await start(engine)
    assert [delta.text for delta in (await anext(primed)).choices] == ["Hello"]
    assert [delta.text for delta in (await anext(primed)).choices] == [","]
    await primed.aclose()
    assert engine.calls[0].outcome == "closed"
    assert engine.num_in_flight() == 0
    with pytest.raises(StopAsyncIteration):
        await anext(primed)


async def test_started_stream_closed_after_reading_closes_the_engine_request() -> None:
    engine = FakeGenerateEngine()
    primed = await start(engine)
    await anext(primed)
    await anext(primed)
    await primed.aclose()
    assert engine.calls[0].outcome == "closed"
    assert engine.num_in_flight() == 0


async def test_started_stream_closed_before_reading_closes_the_engine_request() -> None:
    """A route may close a stream it only started (``GenerationRun.start`` does when a later prompt fails).

    Closing must reach the engine's generator even when no step was read after the first.
    """
    engine = FakeGenerateEngine()
    primed = await start(engine)
    await primed.aclose()
    assert engine.calls[0].outcome == "closed"
    assert engine.num_in_flight() == 0


async def test_closing_the_sse_frames_closes_their_source() -> None:
    """When the server stops iterating a response early, the event source (and so the engine request) must be
    closed right away.

    ``sse_frames`` leaves its source open on ``aclose``: the engine's generator is only finalized when garbage
    collection reaches it, so until then the engine keeps generating for a client that is gone.
    """
    closed: list[bool] = []

    async def source() -> AsyncGenerator[BaseModel, None]:
        try:
            for n in range(3):
                yield Event(n=n)
        finally:
            closed.append(True)

    frames = cast(AsyncGenerator[bytes, None], sse_frames(source(), DATA_LINES))
    assert await anext(frames) == frame(Event(n=0))
    await frames.aclose()
    assert closed == [True]


def chat_text_chunk(index: int, text: str) -> ChatCompletionChunk:
    choice = ChunkChoice(index=index, delta=ChoiceDelta(content=text))
    return ChatCompletionChunk(id="chatcmpl-1", created=1700000000, model="org/model:v1", choices=[choice])


def completion_text_chunk(index: int, text: str) -> Completion:
    choice = CompletionChoice(index=index, text=text, finish_reason=None)
    return Completion(id="cmpl-1", created=1700000000, model="m", choices=[choice])


@settings(max_examples=300, deadline=None)
@given(index=st.integers(min_value=0, max_value=7), text=st.text())
def test_text_chunks_are_the_bytes_of_the_model(index: int, text: str) -> None:
    for make in (chat_text_chunk, completion_text_chunk):
        assert TextChunks(make).encode(index, text) == make(index, text).model_dump_json().encode()


def test_text_chunks_refuse_a_chunk_that_holds_the_mark_twice() -> None:
    def doubled(index: int, text: str) -> ChatCompletionChunk:
        return chat_text_chunk(index, text).model_copy(update={"model": text})

    with pytest.raises(ValueError, match="exactly once"):
        TextChunks(doubled).encode(0, "hi")


async def test_an_idle_stream_gets_keepalive_comments_and_none_after_it_ends() -> None:
    async def slow() -> AsyncGenerator[bytes, None]:
        await asyncio.sleep(0.35)
        yield b'{"x": 1}'

    closed: list[bool] = []

    async def close() -> None:
        closed.append(True)

    response = EventStream(slow(), close, DATA_LINES)
    response.keepalive = 0.1
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    async def receive() -> Message:
        await asyncio.sleep(10)
        return {"type": "http.disconnect"}

    await response({"type": "http", "asgi": {"spec_version": "2.4"}}, receive, send)
    bodies = [message.get("body", b"") for message in sent if message["type"] == "http.response.body"]
    pings = bodies.index(b'data: {"x": 1}\n\n')
    assert 2 <= pings <= 3 and set(bodies[:pings]) == {KEEPALIVE_FRAME}
    assert bodies[pings + 1 :] == [DONE, b""] and closed == [True]
    await asyncio.sleep(0.25)
    assert len(sent) == len(bodies) + 1, "a comment after the body ended"


async def test_keepalive_sleeps_while_there_is_no_open_body(monkeypatch: pytest.MonkeyPatch) -> None:
    """Before the headers and after the body, silence is no reason to ping, nor to spin on the loop."""
    sleeps: list[float] = []
    real_sleep = asyncio.sleep

    async def counted(delay: float) -> None:
        sleeps.append(delay)
        await real_sleep(delay)

    async def send(message: Message) -> None:
        raise AssertionError(f"nothing is open, yet it sent {message}")

    keeper = KeepAlive(send, every=0.1)
    keeper.last = time.monotonic() - 60  # long silent, never opened
    monkeypatch.setattr(asyncio, "sleep", counted)
    task = asyncio.create_task(keeper.run())
    await real_sleep(0.35)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert 2 <= len(sleeps) <= 5 and all(delay > 0 for delay in sleeps), sleeps
