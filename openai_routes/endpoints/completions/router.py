"""``POST /v1/completions``: plain text completion of one or several prompts (text or token ids).

Each choice is counted by the shared output pipeline (``output.py``); this module adds the prompt echo and the
legacy ``logprobs`` shape.

Choice ``i * n + j`` is the ``j``-th sample of prompt ``i``. Every prompt is submitted to the engine at once
(``generation.Generations``), so their prefill runs batched under one deadline; outputs are read in order.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass, field

from fastapi import APIRouter
from starlette.responses import Response

from openai_routes.core.context import current
from openai_routes.core.engine import GenerateEngine, GenerationStep, TokenLogprob
from openai_routes.core.errors import bad_request
from openai_routes.core.limits import Limits, check_request, completion_budget
from openai_routes.core.metrics import ServerMetrics
from openai_routes.core.registry import ModelRegistry
from openai_routes.endpoints.completions.protocol import (
    DEFAULT_MAX_TOKENS,
    Completion,
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
)
from openai_routes.pipeline.choice import ChoiceOutput, usage
from openai_routes.pipeline.generation import Generation, Generations
from openai_routes.protocol.common import CompletionUsage
from openai_routes.server.json_body import StrictJSONRoute
from openai_routes.server.sse import TextChunks, sse_response


@dataclass
class TextLogprobs:
    """Legacy ``logprobs`` object being built for one choice, offsets counted in the returned text."""

    offset: int = 0
    tokens: list[str] = field(default_factory=list)
    token_logprobs: list[float | None] = field(default_factory=list)
    top_logprobs: list[dict[str, float] | None] = field(default_factory=list)
    text_offset: list[int] = field(default_factory=list)

    def add(self, entries: Sequence[TokenLogprob | None], tokens: Sequence[str]) -> CompletionLogprobs:
        """Append ``entries`` (``None`` for the first prompt token); return just the new part."""
        start = len(self.tokens)
        for entry, token in zip(entries, tokens, strict=True):
            self.tokens.append(token)
            self.token_logprobs.append(None if entry is None else entry.logprob)
            self.top_logprobs.append(None if entry is None else {t: v for _, t, v in entry.top})
            self.text_offset.append(self.offset)
            self.offset += len(token)
        return CompletionLogprobs(
            tokens=self.tokens[start:],
            token_logprobs=self.token_logprobs[start:],
            top_logprobs=self.top_logprobs[start:],
            text_offset=self.text_offset[start:],
        )


@dataclass
class Prompt:
    token_ids: list[int]
    text: str
    first_token: str  # the first token's text: vLLM gives no logprob entry for it


def echoed(
    prompt: Prompt, prompt_logprobs: Sequence[TokenLogprob | None] | None, logprobs: TextLogprobs | None
) -> tuple[str, CompletionLogprobs | None]:
    """The prompt as the start of a choice's text, with its logprobs when both echo and logprobs are asked."""
    if logprobs is None:
        return prompt.text, None
    entries = prompt_logprobs or [None] * len(prompt.token_ids)
    tokens = [entry.token if entry else "" for entry in entries]
    if tokens and not tokens[0]:
        tokens[0] = prompt.first_token
    return prompt.text, logprobs.add(entries, tokens)


async def prompt_choices(
    steps: Generation, prompt: Prompt, outputs: Sequence[ChoiceOutput], first_index: int, request: CompletionRequest
) -> AsyncIterator[tuple[GenerationStep, list[CompletionChoice]]]:
    """One prompt's choices, step by step, as ``CompletionChoice`` deltas (with the echoed prompt first); each delta
    is counted in its choice's output."""
    logprobs = [TextLogprobs() if request.logprobs is not None else None for _ in range(request.n)]
    started = [False] * request.n
    prompt_logprobs = None
    async for step in steps:
        prompt_logprobs = prompt_logprobs or step.prompt_logprobs
        choices = []
        for delta in step.choices:
            outputs[delta.index].feed(delta)
            text, lps = "", None
            if request.echo and not started[delta.index]:
                text, lps = echoed(prompt, prompt_logprobs, logprobs[delta.index])
            started[delta.index] = True
            builder = logprobs[delta.index]
            if builder is not None and delta.logprobs is not None:
                new = builder.add(delta.logprobs, [lp.token for lp in delta.logprobs])
                lps = new if lps is None else _join(lps, new)
            choices.append(
                CompletionChoice(
                    index=first_index + delta.index,
                    text=text + delta.text,
                    finish_reason=delta.finish_reason,
                    logprobs=lps,
                )
            )
        yield step, choices


def _join(a: CompletionLogprobs, b: CompletionLogprobs) -> CompletionLogprobs:
    return CompletionLogprobs(
        tokens=a.tokens + b.tokens,
        token_logprobs=a.token_logprobs + b.token_logprobs,
        top_logprobs=a.top_logprobs + b.top_logprobs,
        text_offset=a.text_offset + b.text_offset,
    )


class CompletionRun:
    """The engine requests of one completion request, submitted together, read in prompt order."""

    def __init__(
        self,
        request: CompletionRequest,
        engine: GenerateEngine,
        prompts: list[Prompt],
        generations: Generations,
    ) -> None:
        self.request = request
        self.engine = engine
        self.prompts = prompts
        self.generations = generations
        self.id = f"cmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.streams: list[Generation] = []
        self.prompt_tokens: dict[int, int] = {}
        self.outputs = [ChoiceOutput() for _ in range(len(prompts) * request.n)]
        self.text_chunks = TextChunks(
            lambda index, text: self.chunk([CompletionChoice(index=index, text=text, finish_reason=None)])
        )

    async def submit(self, max_tokens: list[int]) -> None:
        """Every prompt to the engine at once: their prefill is batched, and one deadline covers them all."""
        request = self.request
        self.streams = await self.generations.start(
            self.engine,
            [
                (prompt.token_ids, request.sampling_options(budget, request.logprobs, request.echo), f"{self.id}-{i}")
                for i, (prompt, budget) in enumerate(zip(self.prompts, max_tokens, strict=True))
            ],
        )

    async def choices(self) -> AsyncIterator[list[CompletionChoice]]:
        """Read in prompt order (the others keep generating meanwhile); the route closes the streams."""
        n = self.request.n
        for i, (stream, prompt) in enumerate(zip(self.streams, self.prompts, strict=True)):
            outputs = self.outputs[i * n : (i + 1) * n]
            async for step, choices in prompt_choices(stream, prompt, outputs, i * n, self.request):
                self.prompt_tokens[i] = step.prompt_tokens
                yield choices

    def chunk(self, choices: list[CompletionChoice], usage: CompletionUsage | None = None) -> Completion:
        return Completion(id=self.id, created=self.created, model=self.request.model, choices=choices, usage=usage)

    def usage(self) -> CompletionUsage:
        return usage(sum(self.prompt_tokens.values()), self.outputs)

    async def collect(self) -> Completion:
        merged: dict[int, CompletionChoice] = {}
        async for choices in self.choices():
            for choice in choices:
                old = merged.get(choice.index)
                merged[choice.index] = choice if old is None else _merge(old, choice)
        return self.chunk([merged[i] for i in sorted(merged)], self.usage())

    async def stream(self) -> AsyncGenerator[Completion | bytes, None]:
        """One choice per chunk, as OpenAI sends them."""
        async for choices in self.choices():
            for choice in choices:
                if choice.finish_reason is None and choice.logprobs is None:
                    yield self.text_chunks.encode(choice.index, choice.text)
                else:
                    yield self.chunk([choice])
        if self.request.include_usage:
            yield self.chunk([], self.usage())


def _merge(old: CompletionChoice, new: CompletionChoice) -> CompletionChoice:
    logprobs = (
        old.logprobs
        if new.logprobs is None
        else (new.logprobs if old.logprobs is None else _join(old.logprobs, new.logprobs))
    )
    return CompletionChoice(
        index=old.index,
        text=old.text + new.text,
        finish_reason=new.finish_reason or old.finish_reason,
        logprobs=logprobs,
    )


async def to_prompt(engine: GenerateEngine, prompt: str | list[int]) -> Prompt:
    token_ids = await engine.tokenize(prompt) if isinstance(prompt, str) else list(prompt)
    if not token_ids:
        raise bad_request("The prompt must not be empty.", "prompt")
    text = prompt if isinstance(prompt, str) else await engine.decode(token_ids)
    return Prompt(token_ids, text, await engine.decode(token_ids[:1]))


def create_router(registry: ModelRegistry, limits: Limits, metrics: ServerMetrics) -> APIRouter:
    router = APIRouter(route_class=StrictJSONRoute)

    @router.post("/completions", response_model=None)
    async def create_completion(request: CompletionRequest) -> Completion | Response:
        served, engine = registry.generator(request.model)
        current().model = served.id
        raw = request.prompts()
        requested = request.max_tokens if "max_tokens" in request.model_fields_set else None
        check_request(limits, n=request.n, max_tokens=requested, prompts=len(raw))
        prompts = [await to_prompt(engine, p) for p in raw]
        budgets = [
            completion_budget(
                limits,
                prompt_tokens=len(p.token_ids),
                requested=requested
                if requested is not None
                else min(DEFAULT_MAX_TOKENS, limits.max_tokens or DEFAULT_MAX_TOKENS),
                max_model_len=engine.max_model_len,
                param="prompt",
            )
            for p in prompts
        ]
        generations = Generations(served.id, limits.request_timeout, metrics)
        run = CompletionRun(request, engine, prompts, generations)
        await run.submit(budgets)
        if request.stream:
            return sse_response(run.stream(), close=generations.aclose)
        try:
            return await run.collect()
        finally:
            await generations.aclose()

    return router
