"""``POST /v1/chat/completions``: render the conversation with the model's chat template, generate, and
answer as one ``chat.completion`` or as a stream of ``chat.completion.chunk`` events.

Formats and tool calls are planned in ``tool_calls.py``; each choice is read by the shared output pipeline
(``output.py``); this module only puts its events in chat's wire shape.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, replace

from fastapi import APIRouter
from starlette.responses import Response

from openai_routes.core.context import current
from openai_routes.core.engine import (
    GenerateEngine,
    GenerationStep,
    OutputDelta,
    OutputEvent,
    SamplingOptions,
    TokenLogprob,
)
from openai_routes.core.limits import Limits, check_request, completion_budget
from openai_routes.core.metrics import ServerMetrics
from openai_routes.core.registry import ModelRegistry
from openai_routes.endpoints.tokenize.router import render_messages
from openai_routes.pipeline.choice import ChoiceOutput, choice_outputs, usage
from openai_routes.pipeline.constraints import plan_output
from openai_routes.pipeline.generation import Generation, Generations
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
    FunctionCall,
    ToolCall,
    TopLogprob,
)
from openai_routes.protocol.common import CompletionUsage
from openai_routes.server.json_body import StrictJSONRoute
from openai_routes.server.sse import TextChunks, sse_response


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


class ChatRun:
    """One chat request in the engine: its choices, and its answer as one object or as chunks."""

    def __init__(self, request: ChatCompletionRequest, choices: list[ChoiceOutput]) -> None:
        self.request = request
        self.choices = choices
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.started = [False] * len(choices)
        self.last: GenerationStep | None = None
        self.text_chunks = TextChunks(
            lambda index, text: self.chunk([ChunkChoice(index=index, delta=ChoiceDelta(content=text))])
        )

    def logprobs(self, logprobs: Sequence[TokenLogprob] | None) -> ChoiceLogprobs | None:
        return chat_logprobs(logprobs) if self.request.logprobs else None

    def usage(self) -> CompletionUsage:
        assert self.last is not None
        return usage(self.last.prompt_tokens, self.choices, self.last.cached_tokens)

    async def collect(self, steps: Generation) -> ChatCompletion:
        async for step in steps:
            self.last = step
            for delta in step.choices:
                self.choices[delta.index].feed(delta)
        answers = []
        for index, choice in enumerate(self.choices):
            output = choice.output()
            calls = [ToolCall(id=c.id, function=FunctionCall(name=c.name, arguments=c.arguments)) for c in output.calls]
            message = ChatCompletionMessage(
                content=output.content,
                tool_calls=calls or None,
                reasoning=output.reasoning,
                reasoning_content=output.reasoning,
            )
            answers.append(
                ChatChoice(
                    index=index,
                    message=message,
                    finish_reason=output.finish_reason,
                    logprobs=self.logprobs(choice.logprobs),
                )
            )
        return ChatCompletion(
            id=self.id, created=self.created, model=self.request.model, choices=answers, usage=self.usage()
        )

    def chunk(self, choices: list[ChunkChoice], usage: CompletionUsage | None = None) -> ChatCompletionChunk:
        return ChatCompletionChunk(
            id=self.id, created=self.created, model=self.request.model, choices=choices, usage=usage
        )

    async def stream(self, steps: Generation) -> AsyncGenerator[ChatCompletionChunk | bytes, None]:
        """Every choice's events as they are read: text and reasoning token by token, a tool call's head (index, id,
        type, name) and then its argument pieces. Each chunk carries one choice, as OpenAI sends them (clients often
        read only ``choices[0]``). The route closes ``steps`` (the response's ``close``), however the stream ends."""
        async for step in steps:
            self.last = step
            for delta in step.choices:
                choice = self.choices[delta.index]
                events = choice.feed(delta)
                if self.plain(delta, choice, events):
                    yield self.text_chunks.encode(delta.index, delta.text)
                    continue
                for piece in self.pieces(delta, choice, events):
                    yield self.chunk([piece])
        if self.request.include_usage and self.last is not None:
            yield self.chunk([], self.usage())

    def plain(self, delta: OutputDelta, choice: ChoiceOutput, events: list[OutputEvent]) -> bool:
        """A delta that is only its own text: neither the first (it carries the role) nor the last, no logprobs."""
        return (
            choice.reader is None
            and self.started[delta.index]
            and len(events) == 1
            and delta.finish_reason is None
            and not self.request.logprobs
        )

    def pieces(self, delta: OutputDelta, choice: ChoiceOutput, events: list[OutputEvent]) -> list[ChunkChoice]:
        pieces = [ChunkChoice(index=delta.index, delta=event_delta(choice, event)) for event in events]
        if self.request.logprobs and delta.logprobs:
            if not pieces:
                pieces.append(ChunkChoice(index=delta.index, delta=ChoiceDelta(content="")))
            pieces[0].logprobs = self.logprobs(delta.logprobs)
        if delta.finish_reason is not None:
            pieces.append(ChunkChoice(index=delta.index, delta=ChoiceDelta(), finish_reason=choice.stream_finish))
        if pieces and not self.started[delta.index]:
            self.started[delta.index] = True
            pieces[0].delta.role = "assistant"
        return pieces


def event_delta(choice: ChoiceOutput, event: OutputEvent) -> ChoiceDelta:
    """One output event as a chunk's delta."""
    if event.kind == "text":
        return ChoiceDelta(content=event.text)
    if event.kind == "reasoning":
        return ChoiceDelta(reasoning=event.text, reasoning_content=event.text)
    if event.kind == "call":
        function = ChoiceDeltaToolCallFunction(name=event.text, arguments="")
        head = ChoiceDeltaToolCall(index=event.index, id=choice.ids[event.index], type="function", function=function)
        return ChoiceDelta(tool_calls=[head])
    piece = ChoiceDeltaToolCall(index=event.index, function=ChoiceDeltaToolCallFunction(arguments=event.text))
    return ChoiceDelta(tool_calls=[piece])


@dataclass(frozen=True)
class PreparedChat:
    """A chat request made ready for the engine: its prompt, its sampling options and its choices' readers."""

    prompt_ids: list[int]
    options: SamplingOptions
    choices: list[ChoiceOutput]


async def prepare_chat(
    request: ChatCompletionRequest,
    engine: GenerateEngine,
    limits: Limits,
    *,
    max_tokens_param: str | None = None,
    input_param: str = "messages",
) -> PreparedChat:
    """Check, render and plan a chat request (errors name ``max_tokens_param`` and ``input_param``: the Responses
    API runs as a chat request and names its own fields)."""
    if max_tokens_param is None:
        max_tokens_param = "max_completion_tokens" if request.max_completion_tokens is not None else "max_tokens"
    check_request(
        limits,
        n=request.n,
        max_tokens=request.requested_max_tokens,
        messages=len(request.messages),
        max_tokens_param=max_tokens_param,
    )
    prompt_ids = await render_messages(engine, request.messages, request.tools, request.chat_template_kwargs)
    tools = [tool.model_dump(exclude_none=True) for tool in request.tools or []]  # for the model's parsers
    max_tokens = completion_budget(
        limits,
        prompt_tokens=len(prompt_ids),
        requested=request.requested_max_tokens,
        max_model_len=engine.max_model_len,
        param=input_param,
    )
    plan = plan_output(request, engine.has_tool_parser)
    options = replace(
        request.sampling_options(max_tokens, request.engine_logprobs),
        structured=plan.structured,
        parsed_tools=tools if plan.tool_choice != "none" else None,
    )
    choices = choice_outputs(
        engine,
        request.n,
        tools=tools,
        tool_choice=plan.tool_choice,
        prompt_token_ids=prompt_ids,
        single_call=not request.parallel_tool_calls,
        with_reasoning=request.include_reasoning,
    )
    return PreparedChat(prompt_ids, options, choices)


def create_router(registry: ModelRegistry, limits: Limits, metrics: ServerMetrics) -> APIRouter:
    router = APIRouter(route_class=StrictJSONRoute)

    @router.post("/chat/completions", response_model=None)
    async def create_chat_completion(request: ChatCompletionRequest) -> ChatCompletion | Response:
        served, engine = registry.generator(request.model)
        current().model = served.id
        prepared = await prepare_chat(request, engine, limits)
        run = ChatRun(request, prepared.choices)
        generations = Generations(served.id, limits.request_timeout, metrics)
        [steps] = await generations.start(engine, [(prepared.prompt_ids, prepared.options, run.id)])
        if request.stream:
            return sse_response(run.stream(steps), close=generations.aclose)
        try:
            return await run.collect(steps)
        finally:
            await generations.aclose()

    return router
