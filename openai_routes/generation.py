"""Where the routes call a generation engine: the deadline, the timing metrics and the token counts live here,
once, for chat and completions alike.

``start`` submits the request and waits for its first step under the deadline (so admission errors are plain
HTTP errors); the returned iterator keeps enforcing the deadline. When it passes, the engine request is
aborted (closing the source closes ``AsyncLLM.generate``) and a 504 is raised (an error frame if streaming).

The deadline is one timer per request, not an ``asyncio.timeout`` per step (that cost about 4 us a token, a fifth
of this layer's work): when it fires while the consumer waits for a step, it cancels that wait; when it fires
between steps, the next step raises.
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
        self.last_step = self.started
        self.tokens = 0
        self._source: AsyncGenerator[GenerationStep, None] | None = None
        self._first: list[GenerationStep] = []
        loop = asyncio.get_running_loop()
        self.expired = False
        self._waiting: asyncio.Task[object] | None = None  # the task waiting for a step, cancelled on expiry
        self._timer = loop.call_at(loop.time() + timeout, self._expire)

    async def start(
        self, engine: GenerateEngine, prompt_token_ids: list[int], options: SamplingOptions, request_id: str
    ) -> Generation:
        """Submit the request and wait for its first step, so the engine's refusals raise before any byte."""
        self._source = engine.generate(prompt_token_ids, options, request_id)
        try:
            self._first.append(await self._step())
        except BaseException:
            self._timer.cancel()
            raise
        return self

    def __aiter__(self) -> Generation:
        return self

    async def __anext__(self) -> GenerationStep:
        if self._first:
            return self._first.pop()
        return await self._step()

    async def aclose(self) -> None:
        self._timer.cancel()
        if self._source is not None:
            await self._source.aclose()

    def _expire(self) -> None:
        self.expired = True
        if self._waiting is not None:
            self._waiting.cancel()

    async def _step(self) -> GenerationStep:
        assert self._source is not None, "start() first"
        if not self.expired:
            self._waiting = waiting = asyncio.current_task()
            try:
                step = await anext(self._source)
            except asyncio.CancelledError:
                assert waiting is not None
                if not self.expired or waiting.uncancel() > 0:
                    raise  # cancelled by someone else too (client gone, shutdown): not a timeout
            else:
                self.observe(step)
                return step
            finally:
                self._waiting = None
        await self._source.aclose()
        raise timed_out(self.timeout) from None

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
