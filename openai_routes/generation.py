"""Where the routes call a generation engine: the deadline, the timing metrics and the token counts live here,
once, for chat and completions alike.

``start`` submits the request and waits for its first step under the deadline (so admission errors are plain
HTTP errors); the returned iterator keeps enforcing the deadline. When it passes, the engine request is
aborted (closing the source closes ``AsyncLLM.generate``) and a 504 is raised (an error frame if streaming).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator

from openai_routes.access import current
from openai_routes.engine import GenerateEngine, GenerationStep, SamplingOptions
from openai_routes.errors import timed_out
from openai_routes.metrics import ServerMetrics


class Generation:
    """One engine request's steps, metered and bounded by a deadline. Closing it aborts the engine request."""

    def __init__(self, model: str, timeout: float, metrics: ServerMetrics) -> None:
        self.timeout = timeout
        # Labelled children looked up once, not per step.
        self.ttft = metrics.ttft.labels(model=model)
        self.itl = metrics.itl.labels(model=model)
        self.generated = metrics.generation_tokens.labels(model=model)
        self.prompted = metrics.prompt_tokens.labels(model=model)
        self.started = time.perf_counter()
        self.deadline = asyncio.get_running_loop().time() + timeout
        self.last_step = self.started
        self.tokens = 0
        self._source: AsyncGenerator[GenerationStep, None] | None = None
        self._first: list[GenerationStep] = []

    async def start(
        self, engine: GenerateEngine, prompt_token_ids: list[int], options: SamplingOptions, request_id: str
    ) -> Generation:
        """Submit the request and wait for its first step, so the engine's refusals raise before any byte."""
        self._source = engine.generate(prompt_token_ids, options, request_id)
        self._first.append(await self._step())
        return self

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
            async with asyncio.timeout_at(self.deadline):
                step = await anext(self._source)
        except TimeoutError:
            await self._source.aclose()
            raise timed_out(self.timeout) from None
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
