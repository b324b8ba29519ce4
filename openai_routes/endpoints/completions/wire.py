"""A completions run in the legacy ``text_completion`` shape: the prompt echo and the legacy ``logprobs`` object.

Choice ``i * n + j`` is the ``j``-th sample of prompt ``i``. Streamed, each chunk carries one choice, as OpenAI
sends them; collected, each choice's text and logprobs are built once from what its ``ChoiceOutput`` kept (linear
in the output's length).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from openai_routes.core.engine import TokenLogprob
from openai_routes.endpoints.answer import DataLinesWire
from openai_routes.endpoints.completions.protocol import (
    Completion,
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
)
from openai_routes.pipeline.prepare import PromptText
from openai_routes.pipeline.run import GenerationRun, Piece
from openai_routes.protocol.common import CompletionUsage
from openai_routes.server.sse import Event, TextChunks


@dataclass
class TextLogprobs:
    """A choice's legacy ``logprobs``, offsets counted in the returned text."""

    offset: int = 0
    tokens: list[str] = field(default_factory=list)
    token_logprobs: list[float | None] = field(default_factory=list)
    top_logprobs: list[dict[str, float] | None] = field(default_factory=list)
    text_offset: list[int] = field(default_factory=list)

    def add(self, entries: Sequence[TokenLogprob | None], tokens: Sequence[str]) -> None:
        """Append ``entries`` (``None`` for the first prompt token) with their tokens' texts."""
        for entry, token in zip(entries, tokens, strict=True):
            self.tokens.append(token)
            self.token_logprobs.append(None if entry is None else entry.logprob)
            self.top_logprobs.append(None if entry is None else {t: v for _, t, v in entry.top})
            self.text_offset.append(self.offset)
            self.offset += len(token)

    def add_output(self, entries: Sequence[TokenLogprob]) -> None:
        self.add(entries, [entry.token for entry in entries])

    def add_prompt(self, prompt: PromptText, entries: Sequence[TokenLogprob | None] | None) -> None:
        """The echoed prompt's entries (vLLM gives its first token none: its text comes from the prompt)."""
        entries = entries or [None] * len(prompt.token_ids)
        tokens = [entry.token if entry else "" for entry in entries]
        if tokens and not tokens[0]:
            tokens[0] = prompt.first_token
        self.add(entries, tokens)

    def since(self, start: int) -> CompletionLogprobs:
        """The entries from ``start`` on (a stream's chunk; from 0, the whole choice's)."""
        return CompletionLogprobs(
            tokens=self.tokens[start:],
            token_logprobs=self.token_logprobs[start:],
            top_logprobs=self.top_logprobs[start:],
            text_offset=self.text_offset[start:],
        )


class CompletionWire(DataLinesWire):
    """One completion request's answer, as one object or as chunks."""

    request: CompletionRequest

    def __init__(self, request: CompletionRequest, run: GenerationRun, prompts: list[PromptText], id: str) -> None:
        self.request = request
        self.run = run
        self.prompts = prompts
        self.id = id
        self.created = int(time.time())
        self.text_chunks = TextChunks(
            lambda index, text: self.chunk([CompletionChoice(index=index, text=text, finish_reason=None)])
        )
        self.logprobs = [TextLogprobs() if request.logprobs is not None else None for _ in run.choices]

    @staticmethod
    def new_id() -> str:
        return f"cmpl-{uuid.uuid4().hex}"

    def chunk(self, choices: list[CompletionChoice], usage: CompletionUsage | None = None) -> Completion:
        return Completion(id=self.id, created=self.created, model=self.request.model, choices=choices, usage=usage)

    def prompt_of(self, index: int) -> int:
        return index // self.request.n

    def chunks(self, piece: Piece) -> Iterable[Event]:
        delta, builder = piece.delta, self.logprobs[piece.index]
        text, logprobs = delta.text, None
        start, echo = len(builder.tokens) if builder is not None else 0, piece.first and self.request.echo
        if echo:
            prompt = self.prompt_of(piece.index)
            text = self.prompts[prompt].text + text
            if builder is not None:
                builder.add_prompt(self.prompts[prompt], self.run.prompt_logprobs[prompt])
        if builder is not None and delta.logprobs is not None:
            builder.add_output(delta.logprobs)
        if builder is not None and (echo or delta.logprobs is not None):
            logprobs = builder.since(start)
        if delta.finish_reason is None and logprobs is None:
            return (self.text_chunks.encode(piece.index, text),)
        choice = CompletionChoice(index=piece.index, text=text, finish_reason=delta.finish_reason, logprobs=logprobs)
        return (self.chunk([choice]),)

    async def whole(self) -> Completion:
        choices = []
        for index, choice in enumerate(self.run.choices):
            prompt = self.prompts[self.prompt_of(index)]
            builder, logprobs = self.logprobs[index], None
            if builder is not None:
                if self.request.echo:
                    builder.add_prompt(prompt, self.run.prompt_logprobs[self.prompt_of(index)])
                builder.add_output(choice.logprobs or [])
                logprobs = builder.since(0)
            text = (prompt.text if self.request.echo else "") + "".join(choice.content)
            choices.append(
                CompletionChoice(index=index, text=text, finish_reason=choice.finish_reason, logprobs=logprobs)
            )
        return self.chunk(choices, CompletionUsage.of(self.run.counts()))
