"""How an API request holds engine requests: submitted together under one deadline, counted in sequences by
admission, never left running (a disconnect at any moment closes them without garbage collection), and an engine
failure is an error, never a normal answer."""

from __future__ import annotations

import asyncio
import gc
import json
from collections.abc import AsyncGenerator, Iterator
from typing import Any

import pytest
from starlette.types import Message

from openai_routes.core.engine import EngineFailedError, GenerationStep, SamplingOptions
from openai_routes.core.limits import Limits
from openai_routes.server.admission import Gate, sequences
from tests.unit.fakes import CHAT_MODEL, EMBED_MODEL, FakeEmbedEngine, FakeGenerateEngine, http_scope
from tests.unit.test_routes import KEY, USER, assert_error, serve, sse_events


@pytest.fixture
def no_gc() -> Iterator[None]:
    """Garbage collection must not be what closes an engine request."""
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


# --- several prompts: one submission, one deadline ---------------------------------------------------------------


class BarrierEngine(FakeGenerateEngine):
    """Each prompt's first step waits until every prompt of the request has been submitted to the engine."""

    def __init__(self, prompts: int) -> None:
        super().__init__()
        self.barrier = asyncio.Barrier(prompts)

    def generate(
        self, prompt_token_ids: list[int], options: SamplingOptions, request_id: str, media: Any = None
    ) -> AsyncGenerator[GenerationStep, None]:
        steps = super().generate(prompt_token_ids, options, request_id, media)

        async def after_barrier() -> AsyncGenerator[GenerationStep, None]:
            await self.barrier.wait()
            async for step in steps:
                yield step

        return after_barrier()


@pytest.mark.parametrize("stream", [False, True])
async def test_completion_prompts_are_submitted_together(stream: bool) -> None:
    async with serve(BarrierEngine(prompts=4), limits=Limits(request_timeout=2)) as h:
        request = {"model": CHAT_MODEL, "prompt": ["a", "b", "c", "d"], "stream": stream}
        response = await h.client.post("/completions", json=request)
        assert response.status_code == 200, response.text
        texts = sse_events(response)[:-1] if stream else response.json()["choices"]
        assert {choice["index"] for event in texts for choice in event.get("choices", [event])} == {0, 1, 2, 3}
        assert [call.outcome for call in h.generator.calls] == ["finished"] * 4


@pytest.mark.parametrize("stream", [False, True])
async def test_one_deadline_covers_every_prompt_and_aborts_them_all(stream: bool) -> None:
    generator = FakeGenerateEngine(hold=asyncio.Event())  # every prompt stalls after its first step
    async with serve(generator, limits=Limits(request_timeout=0.3)) as h:
        response = await h.client.post(
            "/completions", json={"model": CHAT_MODEL, "prompt": ["a", "b", "c"], "stream": stream}
        )
        if stream:
            assert sse_events(response)[-2]["error"]["code"] == "timeout"
        else:
            assert_error(response, 504, None, "timeout")
        assert [call.outcome for call in generator.calls] == ["cancelled", "closed", "closed"]
        assert generator.num_in_flight() == 0


async def test_embeddings_have_a_deadline_that_aborts_the_engine_requests() -> None:
    class StallingEmbedder(FakeEmbedEngine):
        async def embed(self, prompt_token_ids: list[int], request_id: str, dimensions: int | None = None) -> Any:
            self._in_flight += 1
            try:
                await asyncio.Event().wait()
            finally:
                self._in_flight -= 1

    embedder = StallingEmbedder()
    async with serve(embedder=embedder, limits=Limits(request_timeout=0.2)) as h:
        response = await h.client.post("/embeddings", json={"model": EMBED_MODEL, "input": ["a", "b"]})
        assert_error(response, 504, None, "timeout")
        assert embedder.num_in_flight() == 0


# --- engine failures are errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/chat/completions", "/completions"])
async def test_engine_failure_is_a_500_not_a_truncated_answer(path: str) -> None:
    failing = FakeGenerateEngine(error=EngineFailedError("finish_reason error"), error_after=1)
    async with serve(failing, raise_app_exceptions=False) as h:
        h.generator.reply = lambda _prompt, _choice: ["The", " capital", " of"]
        response = await h.client.post(path, json={"model": CHAT_MODEL, "messages": USER, "prompt": "x"})
        error = assert_error(response, 500, None)
        assert error["type"] == "server_error"
        assert "finish_reason" not in error["message"]


@pytest.mark.parametrize("path", ["/chat/completions", "/completions"])
async def test_engine_failure_mid_stream_is_an_error_frame_without_a_finish_reason(path: str) -> None:
    async with serve(FakeGenerateEngine(error=EngineFailedError("finish_reason error"), error_after=1)) as h:
        request = {"model": CHAT_MODEL, "messages": USER, "prompt": "x", "stream": True}
        *events, error_frame, done = sse_events(await h.client.post(path, json=request))
        assert done == "[DONE]"
        assert error_frame["error"]["type"] == "server_error"
        assert all(choice["finish_reason"] is None for event in events for choice in event["choices"])


# --- disconnects: the engine request is closed explicitly ---------------------------------------------------------


async def disconnect_before_the_first_body_byte(app: Any, path: str, body: dict[str, Any]) -> list[Message]:
    """The client leaves while the response head is being sent: after the engine's first step, before any body."""
    sent: list[Message] = []
    requests = [{"type": "http.request", "body": json.dumps(body).encode(), "more_body": False}]

    async def receive() -> Message:
        if requests:
            return requests.pop()
        await asyncio.Event().wait()  # no disconnect message: the cancellation below stands for it
        raise AssertionError("unreachable")

    async def send(message: Message) -> None:
        sent.append(message)
        if message["type"] == "http.response.start":
            await asyncio.Event().wait()  # the socket is gone: this send never completes

    task = asyncio.create_task(app(http_scope(path, KEY), receive, send))
    while not sent:
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    return sent


@pytest.mark.parametrize("path", ["/chat/completions", "/completions"])
async def test_disconnect_between_the_first_step_and_the_first_byte_aborts(no_gc: None, path: str) -> None:
    async with serve(FakeGenerateEngine(hold=asyncio.Event())) as h:
        request = {"model": CHAT_MODEL, "messages": USER, "prompt": ["x", "y"], "stream": True}
        sent = await disconnect_before_the_first_body_byte(h.app, path, request)
        assert [message["type"] for message in sent] == ["http.response.start"]
        assert all(call.steps == 1 for call in h.generator.calls)  # the engine had produced its first step
        assert {call.outcome for call in h.generator.calls} <= {"closed", "cancelled"}
        assert h.generator.num_in_flight() == 0


# --- admission counts engine sequences ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "expected"),
    [
        ("/v1/chat/completions", {"n": 3}, 3),
        ("/v1/chat/completions", {"n": None}, 1),
        ("/v1/chat/completions", {"n": "3"}, 1),
        ("/v1/completions", {"prompt": ["a", "b"], "n": 2}, 4),
        ("/v1/completions", {"prompt": [1, 2, 3]}, 1),
        ("/v1/completions", {"prompt": [[1], [2], [3]]}, 3),
        ("/v1/completions", {"prompt": "a", "n": 2}, 2),
        ("/v1/embeddings", {"input": ["a", "b", "c"]}, 3),
        ("/v1/embeddings", {"input": "a"}, 1),
        ("/v1/embeddings", {"input": [[1, 2], [3]]}, 2),
    ],
)
def test_sequences_per_request(path: str, body: dict[str, Any], expected: int) -> None:
    assert sequences(path, body) == expected


async def test_gate_admits_by_weight_in_arrival_order() -> None:
    gate = Gate(capacity=4, max_queued=4)
    await gate.acquire(3)
    assert gate.can_start(1) and not gate.can_start(2)
    big = asyncio.create_task(gate.acquire(4))
    await asyncio.sleep(0)
    assert not gate.can_start(1), "first come, first served: a small request waits behind the queued big one"
    assert gate.full(1) and not gate.full(0)
    small = asyncio.create_task(gate.acquire(1))
    await asyncio.sleep(0)
    gate.release(3)
    await big
    assert not small.done() and gate.in_use == 4
    gate.release(4)
    await small
    assert (gate.in_use, gate.queued) == (1, 0)


async def test_cancelled_waiter_leaves_the_queue() -> None:
    gate = Gate(capacity=1, max_queued=2)
    await gate.acquire(1)
    waiting = asyncio.create_task(gate.acquire(1))
    await asyncio.sleep(0)
    waiting.cancel()
    gate.release(1)  # the cancelled waiter must not be granted the slot
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert (gate.in_use, gate.queued, len(gate.waiters)) == (0, 0, 0)


async def test_admission_counts_prompts_times_n_not_requests() -> None:
    """With room for 2 sequences and no queue, a completion of 2 prompts fills the engine: a 1-sequence chat
    request gets 429 while it runs (per-request counting would have let it in)."""
    hold = asyncio.Event()
    generator = FakeGenerateEngine(hold=hold)
    async with serve(generator, limits=Limits(max_in_flight=2, max_queued=0, max_n=4)) as h:
        big = asyncio.create_task(h.client.post("/completions", json={"model": CHAT_MODEL, "prompt": ["a", "b"]}))
        while len(generator.calls) < 2:
            await asyncio.sleep(0.01)
        response = await h.client.post("/chat/completions", json={"model": CHAT_MODEL, "messages": USER})
        assert_error(response, 429, None, "rate_limit_exceeded")
        hold.set()
        assert (await big).status_code == 200
        response = await h.client.post("/chat/completions", json={"model": CHAT_MODEL, "messages": USER, "n": 2})
        assert response.status_code == 200, response.text
