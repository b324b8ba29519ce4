"""One engine request's steps, metered (time to first token, inter-token latency, token counters and the request's
token counts) and bounded by its API request's deadline. ``start`` submits it and waits for its first step, so the
engine's refusals are plain HTTP errors even for a stream; closing it aborts the request in the engine, and so does
``stop``, which counts it as finished (the call guard ended it: an answer, not a failure).
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator
from typing import Any

from openai_routes.core.context import current
from openai_routes.core.engine import GenerateEngine, GenerationStep, SamplingOptions
from openai_routes.core.metrics import ServerMetrics
from openai_routes.pipeline.deadline import Deadline


class EngineSteps:
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
        self.prompt_tokens = 0
        self.stopped = False
        self._source: AsyncGenerator[GenerationStep, None] | None = None
        self._first: list[GenerationStep] = []

    async def start(
        self,
        engine: GenerateEngine,
        prompt_token_ids: list[int],
        options: SamplingOptions,
        request_id: str,
        media: Any = None,
    ) -> None:
        """Submit the request and wait for its first step, so the engine's refusals raise before any byte."""
        self._source = engine.generate(prompt_token_ids, options, request_id, media)
        self._first.append(await self._step())

    def __aiter__(self) -> EngineSteps:
        return self

    async def __anext__(self) -> GenerationStep:
        if self._first:
            return self._first.pop()
        return await self._step()

    async def aclose(self) -> None:
        if self._source is not None:
            await self._source.aclose()

    async def stop(self) -> None:
        """End the request before the engine finishes it (the call guard ended its choices): aborted in the engine,
        counted as a finished request (its prompt tokens)."""
        if self._source is None or self.stopped:
            return
        self.stopped = True
        await self.aclose()
        self.prompted.inc(self.prompt_tokens)
        current().prompt_tokens += self.prompt_tokens

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
        self.prompt_tokens = step.prompt_tokens
        self.generated.inc(new_tokens)
        context = current()
        context.completion_tokens += new_tokens
        if step.finished:
            self.prompted.inc(step.prompt_tokens)
            context.prompt_tokens += step.prompt_tokens
