"""Where the routes call a generation engine: the deadline, the timing metrics and the token counts live here,
once, for chat and completions alike.

An API request becomes one or more engine requests (a completion of 8 prompts is 8), held by one ``Generations``:
``start`` submits them all at once (so the engine batches their prefill) and waits for each one's first step
under the request's single deadline, so admission errors are plain HTTP errors; each ``Generation`` keeps
enforcing that deadline. When it passes, the engine requests are aborted and a 504 is raised (an error frame
if streaming). ``Generations.aclose`` aborts whatever is still running: the routes call it on every way out,
including a disconnect before the first byte of a stream (``streaming.sse_response(close=...)``).

The deadline is one timer per request, not an ``asyncio.timeout`` per step (that cost about 4 us a token, a fifth
of this layer's work): when it fires while someone waits under it, it cancels that wait; when it fires between
steps, the next step raises.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Awaitable, Sequence
from typing import TypeVar

from openai_routes.core.context import current
from openai_routes.core.engine import GenerateEngine, GenerationStep, SamplingOptions
from openai_routes.core.errors import timed_out
from openai_routes.core.metrics import ServerMetrics

T = TypeVar("T")


class Deadline:
    """One request's deadline: a single timer that cancels the waits made under it once it has passed."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.expired = False
        self._waiting: set[asyncio.Task[object]] = set()
        loop = asyncio.get_running_loop()
        self._timer = loop.call_at(loop.time() + timeout, self._expire)

    def _expire(self) -> None:
        self.expired = True
        for task in self._waiting:
            task.cancel()

    def cancel(self) -> None:
        self._timer.cancel()

    async def wait(self, awaitable: Awaitable[T]) -> T:
        """``await awaitable``, or raise 504 once the deadline has passed (before or while waiting)."""
        if not self.expired:
            task = asyncio.current_task()
            assert task is not None
            self._waiting.add(task)
            try:
                return await awaitable
            except asyncio.CancelledError:
                if not self.expired or task.uncancel() > 0:
                    raise  # cancelled by someone else too (client gone, shutdown): not a timeout
            finally:
                self._waiting.discard(task)
        elif isinstance(awaitable, asyncio.Future):
            awaitable.cancel()
        raise timed_out(self.timeout) from None


class Generation:
    """One engine request's steps, metered and bounded by its API request's deadline. Closing it aborts it."""

    def __init__(self, model: str, deadline: Deadline, metrics: ServerMetrics) -> None:
        self.deadline = deadline
        # Labelled children looked up once, not per step.
        self.ttft = metrics.ttft.labels(model=model)
        self.itl = metrics.itl.labels(model=model)
        self.generated = metrics.generation_tokens.labels(model=model)
        self.prompted = metrics.prompt_tokens.labels(model=model)
        self.started = time.perf_counter()
        self.last_step = self.started
        self.tokens = 0
        self._source: AsyncGenerator[GenerationStep, None] | None = None
        self._first: list[GenerationStep] = []

    async def start(
        self, engine: GenerateEngine, prompt_token_ids: list[int], options: SamplingOptions, request_id: str
    ) -> None:
        """Submit the request and wait for its first step, so the engine's refusals raise before any byte."""
        self._source = engine.generate(prompt_token_ids, options, request_id)
        self._first.append(await self._step())

    def __aiter__(self) -> Generation:
        return self

    async def __anext__(self) -> GenerationStep:
        if self._first:
            return self._first.pop()
        return await self._step()

    async def aclose(self) -> None:
        if self._source is not None:
            await self._source.aclose()

    async def _step(self) -> GenerationStep:
        assert self._source is not None, "start() first"
        try:
            step = await self.deadline.wait(anext(self._source))
        except BaseException:
            await self._source.aclose()
            raise
        self.observe(step)
        return step

    def observe(self, step: GenerationStep) -> None:
        now = time.perf_counter()
        new_tokens = sum(len(delta.token_ids) for delta in step.choices)
        if new_tokens:
            if self.tokens == 0:
                self.ttft.observe(now - self.started)
            else:
                self.itl.observe((now - self.last_step) / new_tokens)
            self.last_step = now
        self.tokens += new_tokens
        self.generated.inc(new_tokens)
        context = current()
        context.completion_tokens += new_tokens
        if step.finished:
            self.prompted.inc(step.prompt_tokens)
            context.prompt_tokens += step.prompt_tokens


EngineRequest = tuple[list[int], SamplingOptions, str]  # prompt token ids, sampling options, engine request id


class Generations:
    """The engine requests of one API request: submitted together under one deadline; closing aborts them all."""

    def __init__(self, model: str, timeout: float, metrics: ServerMetrics) -> None:
        self.model = model
        self.metrics = metrics
        self.deadline = Deadline(timeout)
        self.running: list[Generation] = []

    async def start(self, engine: GenerateEngine, requests: Sequence[EngineRequest]) -> list[Generation]:
        """Submit every request at once and wait for each one's first step; on any failure, abort them all."""
        self.running = [Generation(self.model, self.deadline, self.metrics) for _ in requests]
        try:
            results = await asyncio.gather(
                *(
                    generation.start(engine, *request)
                    for generation, request in zip(self.running, requests, strict=True)
                ),
                return_exceptions=True,
            )
            failure = next((result for result in results if isinstance(result, BaseException)), None)
            if failure is not None:
                raise failure
        except BaseException:
            await self.aclose()
            raise
        return self.running

    async def aclose(self) -> None:
        """Abort what is still running (a no-op for finished requests) and stop the deadline's timer."""
        self.deadline.cancel()
        for generation in self.running:
            await generation.aclose()
