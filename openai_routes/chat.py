"""``POST /v1/chat/completions``: render the conversation with the model's chat template, generate, and
answer as one ``chat.completion`` or as a stream of ``chat.completion.chunk`` events.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

from fastapi import APIRouter
from starlette.responses import Response

from openai_routes.engine import GenerationStep, OutputDelta, TokenLogprob
from openai_routes.limits import Limits, check_request, completion_budget
from openai_routes.protocol.chat import (
    ChatChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionMessage,
    ChatCompletionRequest,
    ChatTokenLogprob,
    ChoiceDelta,
    ChoiceLogprobs,
    ChunkChoice,
    TopLogprob,
)
from openai_routes.protocol.common import CompletionUsage, PromptTokensDetails
from openai_routes.registry import ModelRegistry
from openai_routes.streaming import Primed, prime, sse_response


def chat_logprobs(logprobs: Sequence[TokenLogprob] | None) -> ChoiceLogprobs | None:
    if logprobs is None:
        return None
    return ChoiceLogprobs(
        content=[
            ChatTokenLogprob(
                token=lp.token,
                logprob=lp.logprob,
                bytes=list(lp.token.encode()),
                top_logprobs=[TopLogprob(token=t, logprob=v, bytes=list(t.encode())) for _, t, v in lp.top],
            )
            for lp in logprobs
        ]
    )


@dataclass
class ChoiceState:
    """What one choice has produced so far."""

    text: list[str] = field(default_factory=list)
    tokens: int = 0
    logprobs: list[TokenLogprob] | None = None
    finish_reason: str | None = None
    started: bool = False

    def add(self, delta: OutputDelta) -> None:
        self.text.append(delta.text)
        self.tokens += len(delta.token_ids)
        if delta.logprobs is not None:
            self.logprobs = self.logprobs or []
            self.logprobs.extend(delta.logprobs)
        self.finish_reason = delta.finish_reason or self.finish_reason


def usage(step: GenerationStep, completion_tokens: int) -> CompletionUsage:
    return CompletionUsage(
        prompt_tokens=step.prompt_tokens,
        completion_tokens=completion_tokens,
        total_tokens=step.prompt_tokens + completion_tokens,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=step.cached_tokens),
    )


async def collect(
    steps: Primed[GenerationStep], request: ChatCompletionRequest, request_id: str, model: str
) -> ChatCompletion:
    states = [ChoiceState() for _ in range(request.n)]
    last: GenerationStep | None = None
    async for step in steps:
        last = step
        for delta in step.choices:
            states[delta.index].add(delta)
    assert last is not None
    choices = [
        ChatChoice(
            index=i,
            message=ChatCompletionMessage(content="".join(s.text)),
            finish_reason=s.finish_reason or "stop",  # type: ignore[arg-type]
            logprobs=chat_logprobs(s.logprobs) if request.logprobs else None,
        )
        for i, s in enumerate(states)
    ]
    return ChatCompletion(
        id=request_id,
        created=int(time.time()),
        model=model,
        choices=choices,
        usage=usage(last, sum(s.tokens for s in states)),
    )


async def stream_chunks(
    steps: Primed[GenerationStep], request: ChatCompletionRequest, request_id: str, model: str
) -> AsyncIterator[ChatCompletionChunk]:
    created = int(time.time())
    states = [ChoiceState() for _ in range(request.n)]
    last: GenerationStep | None = None
    async for step in steps:
        last = step
        choices = []
        for delta in step.choices:
            state = states[delta.index]
            state.add(delta)
            if not (delta.text or delta.finish_reason or delta.logprobs or not state.started):
                continue
            choices.append(
                ChunkChoice(
                    index=delta.index,
                    delta=ChoiceDelta(role=None if state.started else "assistant", content=delta.text),
                    finish_reason=delta.finish_reason,
                    logprobs=chat_logprobs(delta.logprobs) if request.logprobs else None,
                )
            )
            state.started = True
        if choices:
            yield ChatCompletionChunk(id=request_id, created=created, model=model, choices=choices)
    if request.include_usage and last is not None:
        completion_tokens = sum(s.tokens for s in states)
        yield ChatCompletionChunk(
            id=request_id, created=created, model=model, choices=[], usage=usage(last, completion_tokens)
        )


def create_router(registry: ModelRegistry, limits: Limits) -> APIRouter:
    router = APIRouter()

    @router.post("/chat/completions", response_model=None)
    async def create_chat_completion(request: ChatCompletionRequest) -> ChatCompletion | Response:
        _, engine = registry.generator(request.model)
        check_request(limits, n=request.n, max_tokens=request.requested_max_tokens, messages=len(request.messages))
        prompt_ids = engine.render_chat([message.template_dict() for message in request.messages])
        max_tokens = completion_budget(
            limits,
            prompt_tokens=len(prompt_ids),
            requested=request.requested_max_tokens,
            max_model_len=engine.max_model_len,
            param="messages",
        )
        request_id = f"chatcmpl-{uuid.uuid4().hex}"
        options = request.sampling_options(max_tokens, request.engine_logprobs)
        steps = await prime(engine.generate(prompt_ids, options, request_id))
        if request.stream:
            return sse_response(stream_chunks(steps, request, request_id, request.model))
        return await collect(steps, request, request_id, request.model)

    return router
