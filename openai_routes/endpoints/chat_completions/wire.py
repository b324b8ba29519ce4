"""A chat run in chat's wire shape: one ``chat.completion``, or ``chat.completion.chunk`` events.

Streamed, every choice's events go out as they are read: text and reasoning token by token, a tool call's head
(index, id, type, name) and then its argument pieces. Each chunk carries one choice, as OpenAI sends them (clients
often read only ``choices[0]``); the first carries the role, the last the finish reason; with ``include_usage`` a
last chunk carries the usage and no choice. Plain text chunks are encoded from a template (``TextChunks``).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence

from openai_routes.core.engine import OutputEvent, TokenLogprob
from openai_routes.endpoints.answer import DataLinesWire
from openai_routes.pipeline.choice import ChoiceOutput
from openai_routes.pipeline.run import GenerationRun, Piece
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
from openai_routes.server.sse import Event, TextChunks

Keep = Callable[[ChatCompletion], Awaitable[None]]


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


class ChatWire(DataLinesWire):
    """One chat request's answer, as one object or as chunks."""

    request: ChatCompletionRequest

    def __init__(self, request: ChatCompletionRequest, run: GenerationRun, id: str, keep: Keep | None = None) -> None:
        self.request = request
        self.keep = keep  # with ``store: true``: the finished completion's write, before it is answered
        self.run = run
        self.id = id
        self.created = int(time.time())
        self.role_sent = [False] * len(run.choices)
        self.text_chunks = TextChunks(
            lambda index, text: self.chunk([ChunkChoice(index=index, delta=ChoiceDelta(content=text))])
        )

    @staticmethod
    def new_id() -> str:
        return f"chatcmpl-{uuid.uuid4().hex}"

    def logprobs(self, logprobs: Sequence[TokenLogprob] | None) -> ChoiceLogprobs | None:
        return chat_logprobs(logprobs) if self.request.logprobs else None

    def chunk(self, choices: list[ChunkChoice], usage: CompletionUsage | None = None) -> ChatCompletionChunk:
        return ChatCompletionChunk(
            id=self.id, created=self.created, model=self.request.model, choices=choices, usage=usage
        )

    def chunks(self, piece: Piece) -> Iterable[Event]:
        delta, choice, events = piece.delta, piece.choice, piece.events
        plain = (
            choice.reader is None
            and self.role_sent[piece.index]
            and len(events) == 1
            and delta.finish_reason is None
            and not self.request.logprobs
        )  # only its own text: not the first chunk (it carries the role), not the last, no logprobs
        if plain:
            return (self.text_chunks.encode(piece.index, delta.text),)
        pieces = [ChunkChoice(index=piece.index, delta=event_delta(choice, event)) for event in events]
        if self.request.logprobs and delta.logprobs:
            if not pieces:
                pieces.append(ChunkChoice(index=piece.index, delta=ChoiceDelta(content="")))
            pieces[0].logprobs = self.logprobs(delta.logprobs)
        if delta.finish_reason is not None:
            pieces.append(ChunkChoice(index=piece.index, delta=ChoiceDelta(), finish_reason=choice.stream_finish))
        if pieces and not self.role_sent[piece.index]:
            self.role_sent[piece.index] = True
            pieces[0].delta.role = "assistant"
        return [self.chunk([one]) for one in pieces]

    async def closing(self) -> Iterable[Event]:
        if self.keep is not None:
            await self.keep(self.completion())
        return await super().closing()

    async def whole(self) -> ChatCompletion:
        completion = self.completion()
        if self.keep is not None:
            await self.keep(completion)
        return completion

    def completion(self) -> ChatCompletion:
        answers = []
        for index, choice in enumerate(self.run.choices):
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
            id=self.id,
            created=self.created,
            model=self.request.model,
            choices=answers,
            usage=CompletionUsage.of(self.run.counts()),
        )
