"""``POST /v1/chat/completions``: render the conversation with the model's chat template, generate, and
answer as one ``chat.completion`` or as a stream of ``chat.completion.chunk`` events.

Formats and tool calls are planned in ``tool_calls.py``; this module only runs the plan.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from fastapi import APIRouter
from starlette.responses import Response

from openai_routes.access import current
from openai_routes.engine import GenerateEngine, GenerationStep, OutputDelta, TokenLogprob
from openai_routes.generation import Generation
from openai_routes.json_body import StrictJSONRoute
from openai_routes.limits import Limits, check_request, completion_budget
from openai_routes.metrics import ServerMetrics
from openai_routes.protocol.chat import (
    ChatChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionMessage,
    ChatCompletionRequest,
    ChatTokenLogprob,
    ChoiceDelta,
    ChoiceDeltaToolCall,
    ChoiceDeltaToolCallFunction,
    ChoiceLogprobs,
    ChunkChoice,
    TopLogprob,
)
from openai_routes.protocol.common import CompletionUsage, PromptTokensDetails
from openai_routes.registry import ModelRegistry
from openai_routes.streaming import TextChunks, sse_response
from openai_routes.tool_calls import AssistantOutput, OutputPlan, plan_output, read_output


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


class ChatRun:
    """One chat request in the engine: its output plan, and its answer as one object or as chunks."""

    def __init__(
        self, request: ChatCompletionRequest, engine: GenerateEngine, plan: OutputPlan, tools: list[dict[str, Any]]
    ) -> None:
        self.request = request
        self.engine = engine
        self.plan = plan
        self.tools = tools
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.states = [ChoiceState() for _ in range(request.n)]
        self.last: GenerationStep | None = None
        self.text_chunks = TextChunks(
            lambda index, text: self.chunk([ChunkChoice(index=index, delta=ChoiceDelta(content=text))])
        )

    def output(self, state: ChoiceState) -> AssistantOutput:
        text = "".join(state.text)
        finish: Literal["stop", "length"] = "length" if state.finish_reason == "length" else "stop"
        parsed = self.engine.parse_tool_calls(text, self.tools) if self.plan.mode == "auto" else None
        return read_output(self.plan, text, finish, parsed, self.request.parallel_tool_calls)

    def logprobs(self, logprobs: Sequence[TokenLogprob] | None) -> ChoiceLogprobs | None:
        return chat_logprobs(logprobs) if self.request.logprobs else None

    def usage(self) -> CompletionUsage:
        assert self.last is not None
        completion_tokens = sum(state.tokens for state in self.states)
        return CompletionUsage(
            prompt_tokens=self.last.prompt_tokens,
            completion_tokens=completion_tokens,
            total_tokens=self.last.prompt_tokens + completion_tokens,
            prompt_tokens_details=PromptTokensDetails(cached_tokens=self.last.cached_tokens),
        )

    async def collect(self, steps: Generation) -> ChatCompletion:
        try:
            async for step in steps:
                self.last = step
                for delta in step.choices:
                    self.states[delta.index].add(delta)
        finally:
            await steps.aclose()
        choices = []
        for index, state in enumerate(self.states):
            output = self.output(state)
            message = ChatCompletionMessage(content=output.content, tool_calls=output.tool_calls)
            choices.append(
                ChatChoice(
                    index=index,
                    message=message,
                    finish_reason=output.finish_reason,
                    logprobs=self.logprobs(state.logprobs),
                )
            )
        return ChatCompletion(
            id=self.id, created=self.created, model=self.request.model, choices=choices, usage=self.usage()
        )

    def chunk(self, choices: list[ChunkChoice], usage: CompletionUsage | None = None) -> ChatCompletionChunk:
        return ChatCompletionChunk(
            id=self.id, created=self.created, model=self.request.model, choices=choices, usage=usage
        )

    async def stream(self, steps: Generation) -> AsyncGenerator[ChatCompletionChunk | bytes, None]:
        """Text streams token by token; a constrained tool call is sent once its choice has finished.
        Each chunk carries one choice, as OpenAI sends them (clients often read only ``choices[0]``)."""
        try:
            async for step in steps:
                self.last = step
                for delta in step.choices:
                    state = self.states[delta.index]
                    state.add(delta)
                    if self.plan.mode == "text":
                        if self.plain(delta, state):
                            yield self.text_chunks.encode(delta.index, delta.text)
                            continue
                        choices = self.text_delta(delta, state)
                    elif delta.finish_reason is not None:
                        choices = self.finished_choice(delta.index, state)
                    else:
                        continue
                    for choice in choices:
                        yield self.chunk([choice])
        finally:
            await steps.aclose()
        if self.request.include_usage and self.last is not None:
            yield self.chunk([], self.usage())

    def plain(self, delta: OutputDelta, state: ChoiceState) -> bool:
        """Only text in this delta: neither the first (it carries the role) nor the last, and no logprobs."""
        return state.started and bool(delta.text) and delta.finish_reason is None and not self.request.logprobs

    def text_delta(self, delta: OutputDelta, state: ChoiceState) -> list[ChunkChoice]:
        if state.started and not (delta.text or delta.finish_reason or delta.logprobs):
            return []
        role: Literal["assistant"] | None = None if state.started else "assistant"
        state.started = True
        return [
            ChunkChoice(
                index=delta.index,
                delta=ChoiceDelta(role=role, content=delta.text),
                finish_reason=delta.finish_reason,
                logprobs=self.logprobs(delta.logprobs),
            )
        ]

    def finished_choice(self, index: int, state: ChoiceState) -> list[ChunkChoice]:
        output = self.output(state)
        if not output.tool_calls:
            delta = ChoiceDelta(role="assistant", content=output.content)
            return [ChunkChoice(index=index, delta=delta, finish_reason=output.finish_reason)]
        choices = []
        for number, call in enumerate(output.tool_calls):
            head = ChoiceDeltaToolCall(
                index=number,
                id=call.id,
                type="function",
                function=ChoiceDeltaToolCallFunction(name=call.function.name, arguments=""),
            )
            body = ChoiceDeltaToolCall(
                index=number, function=ChoiceDeltaToolCallFunction(arguments=call.function.arguments)
            )
            role: Literal["assistant"] | None = "assistant" if number == 0 else None
            choices.append(ChunkChoice(index=index, delta=ChoiceDelta(role=role, tool_calls=[head])))
            choices.append(ChunkChoice(index=index, delta=ChoiceDelta(tool_calls=[body])))
        choices.append(ChunkChoice(index=index, delta=ChoiceDelta(), finish_reason="tool_calls"))
        return choices


def create_router(registry: ModelRegistry, limits: Limits, metrics: ServerMetrics) -> APIRouter:
    router = APIRouter(route_class=StrictJSONRoute)

    @router.post("/chat/completions", response_model=None)
    async def create_chat_completion(request: ChatCompletionRequest) -> ChatCompletion | Response:
        served, engine = registry.generator(request.model)
        current().model = served.id
        check_request(
            limits,
            n=request.n,
            max_tokens=request.requested_max_tokens,
            messages=len(request.messages),
            max_tokens_param="max_completion_tokens" if request.max_completion_tokens is not None else "max_tokens",
        )
        tools = [tool.model_dump(exclude_none=True) for tool in request.tools or []]
        messages = [message.template_dict() for message in request.messages]
        prompt_ids = engine.render_chat(messages, tools or None)
        max_tokens = completion_budget(
            limits,
            prompt_tokens=len(prompt_ids),
            requested=request.requested_max_tokens,
            max_model_len=engine.max_model_len,
            param="messages",
        )
        plan = plan_output(request, engine.has_tool_parser)
        options = replace(request.sampling_options(max_tokens, request.engine_logprobs), structured=plan.structured)
        run = ChatRun(request, engine, plan, tools)
        steps = await Generation(served.id, limits.request_timeout, metrics).start(engine, prompt_ids, options, run.id)
        if request.stream:
            return sse_response(run.stream(steps))
        return await run.collect(steps)

    return router
