"""One request's generation in the engine, for every endpoint: ``GenerationRun``.

An API request becomes one or more engine requests (a completion of 8 prompts is 8; chat and the Responses API are
one), each sampled ``n`` times. ``start`` submits them all at once (so the engine batches their prefill) and waits
for each one's first step under the request's single deadline, so the engine's refusals are plain HTTP errors even
for a stream. ``pieces`` then reads them in prompt order (the others keep generating meanwhile): every delta of
every choice, counted and read by its ``ChoiceOutput`` (choice ``prompt * n + j`` is the ``j``-th sample of that
prompt), with the events it completed and whether it is the choice's first. A choice the call guard ended (a
repeated tool call, ``pipeline.call_guard``) gets a last piece with the finish ``stop``, and once every choice of
its prompt has finished, that engine request is stopped (aborted, nothing more generated). ``counts`` are the
engine's token counts (prompt, completion, cached, reasoning). ``aclose`` aborts whatever still runs: the routes
call it on every way out. Nothing here knows HTTP or a wire shape: an endpoint turns pieces into its chunks, or reads
the finished ``choices``; the batch runner can drive a run the same way.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from openai_routes.core.engine import (
    GenerateEngine,
    GenerationStep,
    OutputDelta,
    OutputEvent,
    SamplingOptions,
    TokenCounts,
    TokenLogprob,
)
from openai_routes.core.metrics import ServerMetrics
from openai_routes.pipeline.choice import ChoiceOutput
from openai_routes.pipeline.deadline import Deadline
from openai_routes.pipeline.engine_steps import EngineSteps


@dataclass(frozen=True)
class EngineInput:
    """One prompt for the engine: its token ids, how to sample it (``options.n`` choices), and with images the
    engine's processed input for them (``RenderedPrompt.media``)."""

    prompt_ids: list[int]
    options: SamplingOptions
    media: Any = None


@dataclass(frozen=True)
class Reading:
    """How a request's choices are read: the tools its output may call (``tool_choice`` is OpenAI's), whether a
    reasoning model's reasoning is read apart (chat and Responses) or left in the text (completions), and returned."""

    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] = "none"
    single_call: bool = False  # parallel_tool_calls: false
    reasoning_apart: bool = True
    with_reasoning: bool = True  # vLLM's include_reasoning


RAW_TEXT = Reading(reasoning_apart=False)


@dataclass(frozen=True)
class RunSettings:
    """What every run of a server shares: the request deadline (seconds) and the metrics."""

    timeout: float
    metrics: ServerMetrics


@dataclass(slots=True)
class Piece:
    """One choice's delta as read: its index in the request, the engine's delta, the events it completed."""

    index: int
    delta: OutputDelta
    events: list[OutputEvent]
    first: bool  # the choice's first delta
    choice: ChoiceOutput


class GenerationRun:
    """The engine requests of one API request: submitted together under one deadline, read choice by choice,
    counted, and aborted together on ``aclose``."""

    def __init__(
        self,
        engine: GenerateEngine,
        model: str,
        inputs: Sequence[EngineInput],
        reading: Reading,
        request_id: str,
        settings: RunSettings,
    ) -> None:
        self.engine = engine
        self.model = model
        self.inputs = list(inputs)
        self.request_id = request_id
        self.metrics = settings.metrics
        self.deadline = Deadline(settings.timeout)
        self.choices = [self.choice(reading, prompt) for prompt in self.inputs for _ in range(prompt.options.n)]
        self.started = [False] * len(self.choices)
        self.steps: list[EngineSteps] = []
        self.last: list[GenerationStep | None] = [None] * len(self.inputs)
        self.prompt_logprobs: list[Sequence[TokenLogprob | None] | None] = [None] * len(self.inputs)

    def choice(self, reading: Reading, prompt: EngineInput) -> ChoiceOutput:
        capabilities = self.engine.capabilities
        parse = reading.tool_choice != "none" or (capabilities.reasoning_parser and reading.reasoning_apart)
        reader = self.engine.output_reader(reading.tools, reading.tool_choice, prompt.prompt_ids) if parse else None
        return ChoiceOutput(
            reader,
            reading.single_call,
            reading.with_reasoning,
            token_ids=[] if capabilities.reasoning_parser else None,
        )

    def engine_request_id(self, prompt: int) -> str:
        return self.request_id if len(self.inputs) == 1 else f"{self.request_id}-{prompt}"

    async def start(self) -> None:
        """Submit every prompt at once and wait for each one's first step; on any failure, abort them all."""
        self.steps = [EngineSteps(self.model, self.deadline, self.metrics) for _ in self.inputs]
        try:
            results = await asyncio.gather(
                *(
                    steps.start(self.engine, prompt.prompt_ids, prompt.options, self.engine_request_id(i), prompt.media)
                    for i, (steps, prompt) in enumerate(zip(self.steps, self.inputs, strict=True))
                ),
                return_exceptions=True,
            )
            failure = next((result for result in results if isinstance(result, BaseException)), None)
            if failure is not None:
                raise failure
        except BaseException:
            await self.aclose()
            raise

    async def pieces(self) -> AsyncIterator[Piece]:
        """Every choice's deltas as they are read, in prompt order; the route closes the run however this ends."""
        for prompt, steps in enumerate(self.steps):
            first_choice = self.first_choice(prompt)
            async for step in steps:
                self.last[prompt] = step
                if step.prompt_logprobs is not None:
                    self.prompt_logprobs[prompt] = step.prompt_logprobs
                for delta in step.choices:
                    index = first_choice + delta.index
                    choice = self.choices[index]
                    if choice.ended:  # its siblings still run (n > 1): what it still makes is neither read nor counted
                        continue
                    first = not self.started[index]
                    self.started[index] = True
                    events = choice.feed(delta)
                    if choice.ended:  # the call guard ended it: its last piece says so
                        delta = dataclasses.replace(delta, finish_reason="stop")
                    yield Piece(index, delta, events, first, choice)
                if not step.finished and self.all_ended(prompt):
                    await steps.stop()  # the guard ended every choice: the engine request generates no more
                    break

    def first_choice(self, prompt: int) -> int:
        return sum(self.inputs[i].options.n for i in range(prompt))

    def all_ended(self, prompt: int) -> bool:
        """Whether the call guard ended a choice of ``prompt`` and every other one has finished too."""
        first = self.first_choice(prompt)
        choices = self.choices[first : first + self.inputs[prompt].options.n]
        return any(choice.ended for choice in choices) and all(choice.finish_reason for choice in choices)

    def counts(self) -> TokenCounts:
        steps = [step for step in self.last if step is not None]
        reasoning = None
        if self.engine.capabilities.reasoning_parser:
            reasoning = sum(self.engine.count_reasoning_tokens(choice.token_ids or []) for choice in self.choices)
        return TokenCounts(
            prompt=sum(step.prompt_tokens for step in steps),
            completion=sum(choice.tokens for choice in self.choices),
            cached=sum(step.cached_tokens for step in steps),
            reasoning=reasoning,
        )

    async def aclose(self) -> None:
        """Abort what is still running (a no-op for finished requests) and stop the deadline's timer."""
        self.deadline.cancel()
        for steps in self.steps:
            await steps.aclose()
