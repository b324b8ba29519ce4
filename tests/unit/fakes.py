"""Scripted engines for the unit tests: the ``GenerateEngine`` / ``EmbedEngine`` protocols without a model.

Text is tokenized one character per token (token id = code point), so prompt sizes are easy to reason about.
A reply is a list of pieces, one token each, chosen by ``reply(prompt_text, choice_index)``; every call is
recorded with its ``SamplingOptions`` and how it ended (finished, closed by the caller, cancelled, failed).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import prometheus_client
from fastapi import FastAPI
from starlette.types import Scope

from openai_routes.app import create_app
from openai_routes.core.adapters import AdapterLoader
from openai_routes.core.context import current
from openai_routes.core.engine import (
    Embedding,
    EmbedEngine,
    EngineInputError,
    GenerateEngine,
    GenerationStep,
    ImageInput,
    ModelCapabilities,
    OutputDelta,
    OutputEvent,
    RenderedPrompt,
    SamplingOptions,
    TokenLogprob,
)
from openai_routes.core.limits import Limits
from openai_routes.core.metrics import ServerMetrics
from openai_routes.core.registry import ModelRegistry, ServedModel
from openai_routes.endpoints.batches.runner import BatchRunner
from openai_routes.server.auth import KeyRing
from openai_routes.server.guard import Drain
from openai_routes.store.book import ResponseBook

Outcome = Literal["pending", "running", "finished", "closed", "cancelled", "failed"]
Reply = Callable[[str, int], list[str]]
PIECE_IDS = 0x110000  # piece token ids start above every code point, so they never clash with characters


def hello(_prompt: str, _choice: int) -> list[str]:
    return ["Hello", ",", " world"]


def chat_prompt(messages: Sequence[dict[str, Any]]) -> str:
    """The fake chat template: ``<role>content`` per message, then ``<assistant>``; an image part is ``<image>``."""
    return "".join(f"<{message['role']}>{content_text(message['content'])}" for message in messages) + "<assistant>"


def content_text(content: Any) -> str:
    if not isinstance(content, list):
        return str(content)
    return "".join("<image>" if part["type"] == "image" else part["text"] for part in content)


IMAGE_TOKEN = 0x10FFFF  # one fake token per 16 x 16 pixels of an image (at least one)


def image_tokens(image: ImageInput) -> list[int]:
    width, height = image.image.size
    return [IMAGE_TOKEN] * max(1, width * height // 256)


class TextReader:
    """A model whose parsers find only text (the real ones are vLLM's: tests/unit/test_output_parsers.py)."""

    def feed(self, text: str, token_ids: Sequence[int], finished: bool) -> list[OutputEvent]:
        return [OutputEvent("text", text)] if text else []


@dataclass
class GenerateCall:
    prompt_token_ids: list[int]
    options: SamplingOptions
    request_id: str
    outcome: Outcome = "pending"
    steps: int = 0
    priority: int = 0  # the request context's, when generate was called
    media: Any = None  # a prompt with images: the fake's "processed input" (the images' params)


@dataclass
class FakeGenerateEngine:
    """A ``GenerateEngine`` that plays ``reply`` back, one piece per step for every choice."""

    reply: Reply = hello
    context: int = 64
    healthy: bool = True
    cached_tokens: int = 0
    error: BaseException | None = None  # raised by generate after ``error_after`` steps
    error_after: int = 0
    prompt_errors: dict[str, BaseException] = field(default_factory=dict)  # prompt text -> raised before any step
    hold: asyncio.Event | None = None  # when set: wait for it after the first step
    calls: list[GenerateCall] = field(default_factory=list)
    rendered: list[list[dict[str, Any]]] = field(default_factory=list)
    images: list[list[ImageInput]] = field(default_factory=list)  # each render's images
    _vocab: dict[str, int] = field(default_factory=dict)
    _in_flight: int = 0
    capabilities: ModelCapabilities = field(default_factory=ModelCapabilities)

    @property
    def max_model_len(self) -> int:
        return self.context

    def is_healthy(self) -> bool:
        return self.healthy

    def num_in_flight(self) -> int:
        return self._in_flight

    def shutdown(self) -> None:
        self.healthy = False

    async def tokenize(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return [ord(char) for char in text]

    async def decode(self, token_ids: Sequence[int]) -> str:
        """As the real engine's: ids outside the vocabulary (code points and known pieces) are a 400 on ``prompt``."""
        if any(not (0 <= i < PIECE_IDS or i in self._vocab.values()) for i in token_ids):
            raise EngineInputError("Token ids must be in the vocabulary.", "prompt")
        return self.text_of(token_ids)

    def text_of(self, token_ids: Sequence[int]) -> str:
        pieces = {token_id: piece for piece, token_id in self._vocab.items()}
        return "".join(pieces[i] if i >= PIECE_IDS else chr(i) for i in token_ids)

    async def render_chat(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None = None,
        template_kwargs: dict[str, Any] | None = None,
        images: Sequence[ImageInput] = (),
    ) -> RenderedPrompt:
        """The fake template's characters, each ``<image>`` followed by its image's tokens."""
        self.rendered.append(messages)
        self.images.append(list(images))
        text = chat_prompt(messages)
        if not images:
            return RenderedPrompt([ord(char) for char in text])
        pieces = text.split("<image>")
        ids = [ord(char) for char in pieces[0]]
        for image, piece in zip(images, pieces[1:], strict=True):
            ids += image_tokens(image) + [ord(char) for char in piece]
        return RenderedPrompt(ids, media=[image.param for image in images])

    def count_reasoning_tokens(self, token_ids: Sequence[int]) -> int:
        return 0

    def output_reader(
        self,
        tools: list[dict[str, Any]] | None,
        tool_choice: str | dict[str, Any],
        prompt_token_ids: Sequence[int],
    ) -> TextReader:
        return TextReader()

    def piece_id(self, piece: str) -> int:
        return self._vocab.setdefault(piece, PIECE_IDS + len(self._vocab))

    def logprob(self, piece: str, top: int) -> TokenLogprob:
        alternatives = [(self.piece_id(piece), piece, -0.25), (self.piece_id("?"), "?", -2.0), (0, "\x00", -9.0)]
        return TokenLogprob(self.piece_id(piece), piece, -0.25, alternatives[:top])

    def generate(
        self, prompt_token_ids: list[int], options: SamplingOptions, request_id: str, media: Any = None
    ) -> AsyncGenerator[GenerationStep, None]:
        call = GenerateCall(list(prompt_token_ids), options, request_id, priority=current().priority, media=media)
        self.calls.append(call)
        return self._run(call)

    def _steps(self, call: GenerateCall) -> list[GenerationStep]:
        options, prompt = call.options, self.text_of(call.prompt_token_ids)
        replies = [self.reply(prompt, j) for j in range(options.n)]
        steps = []
        for position in range(max(min(len(pieces), options.max_tokens) for pieces in replies)):
            deltas = []
            for j, pieces in enumerate(replies):
                kept = pieces[: options.max_tokens]
                if position >= len(kept):
                    continue
                piece, last = kept[position], position == len(kept) - 1
                deltas.append(
                    OutputDelta(
                        index=j,
                        text=piece,
                        token_ids=[self.piece_id(piece)],
                        logprobs=None if options.logprobs is None else [self.logprob(piece, options.logprobs)],
                        finish_reason=("length" if len(pieces) > len(kept) else "stop") if last else None,
                    )
                )
            steps.append(GenerationStep(deltas, len(call.prompt_token_ids), self.cached_tokens))
        steps[-1].finished = True
        if options.prompt_logprobs is not None:
            steps[0].prompt_logprobs = [None] + [
                TokenLogprob(i, self.text_of([i]), -1.5, [(i, self.text_of([i]), -1.5)])
                for i in call.prompt_token_ids[1:]
            ]
        return steps

    async def _run(self, call: GenerateCall) -> AsyncGenerator[GenerationStep, None]:
        call.outcome = "running"
        self._in_flight += 1
        try:
            prompt_error = self.prompt_errors.get(self.text_of(call.prompt_token_ids))
            if prompt_error is not None:
                raise prompt_error
            for step in self._steps(call):
                if self.error is not None and call.steps == self.error_after:
                    raise self.error
                if self.hold is not None and call.steps == 1:
                    await self.hold.wait()
                call.steps += 1
                yield step
            call.outcome = "finished"
        except GeneratorExit:
            call.outcome = "closed"
            raise
        except asyncio.CancelledError:
            call.outcome = "cancelled"
            raise
        except BaseException:
            call.outcome = "failed"
            raise
        finally:
            self._in_flight -= 1


@dataclass
class EmbedCall:
    prompt_token_ids: list[int]
    request_id: str
    dimensions: int | None


@dataclass
class FakeEmbedEngine:
    """An ``EmbedEngine`` whose vector depends only on the input (exact in float32, for base64 checks).

    Later calls finish first, so a response in input order proves the router does not rely on timing.
    """

    native: int = 4
    matryoshka: tuple[int, ...] = (2,)
    context: int = 32
    healthy: bool = True
    error: BaseException | None = None
    calls: list[EmbedCall] = field(default_factory=list)
    finished: list[str] = field(default_factory=list)
    _in_flight: int = 0

    @property
    def max_model_len(self) -> int:
        return self.context

    @property
    def dimensions(self) -> int:
        return self.native

    def accepts_dimensions(self, dimensions: int) -> bool:
        return dimensions == self.native or dimensions in self.matryoshka

    def is_healthy(self) -> bool:
        return self.healthy

    def num_in_flight(self) -> int:
        return self._in_flight

    def shutdown(self) -> None:
        self.healthy = False

    async def tokenize(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return [ord(char) for char in text]

    @staticmethod
    def vector_for(token_ids: Sequence[int], dimensions: int) -> list[float]:
        return [float(len(token_ids)), float(token_ids[0] % 8), 0.5, -1.0][:dimensions]

    async def embed(self, prompt_token_ids: list[int], request_id: str, dimensions: int | None = None) -> Embedding:
        self.calls.append(EmbedCall(list(prompt_token_ids), request_id, dimensions))
        self._in_flight += 1
        try:
            await asyncio.sleep(0.02 / len(self.calls))
            if self.error is not None:
                raise self.error
            self.finished.append(request_id)
            return Embedding(self.vector_for(prompt_token_ids, dimensions or self.native), len(prompt_token_ids))
        finally:
            self._in_flight -= 1


def as_engines(generator: FakeGenerateEngine, embedder: FakeEmbedEngine) -> tuple[GenerateEngine, EmbedEngine]:
    """The fakes typed as the protocols: mypy checks here that they still implement them."""
    return generator, embedder


CHAT_MODEL = "fake-chat"
CHAT_ALIAS = "chat-alias"
EMBED_MODEL = "org/fake-embed"


def fake_registry(generator: FakeGenerateEngine, embedder: FakeEmbedEngine) -> ModelRegistry:
    """A chat model (with an alias) and an embedding model whose id contains a slash."""
    registry = ModelRegistry()
    chat, embed = as_engines(generator, embedder)
    registry.add(ServedModel(CHAT_MODEL, "chat", chat, "tests", 1700000000, (CHAT_ALIAS,)))
    registry.add(ServedModel(EMBED_MODEL, "embed", embed, "tests", 1700000001))
    return registry


def build_app(
    registry: ModelRegistry,
    keyring: KeyRing,
    limits: Limits | None = None,
    book: ResponseBook | None = None,
    admin: tuple[KeyRing, AdapterLoader] | None = None,
    batch_runner: BatchRunner | None = None,
) -> FastAPI:
    """``create_app`` with metrics in a registry of their own (prometheus refuses duplicate names), no drain, and
    a response book whose store is not open unless one is given (opened by the test)."""
    metrics = ServerMetrics.for_registry(prometheus_client.CollectorRegistry())
    book = book or ResponseBook(stale_after=660)
    return create_app(
        registry, keyring, limits or Limits(), metrics, Drain(), book, admin=admin, batch_runner=batch_runner
    )


def http_scope(path: str, api_key: str) -> Scope:
    """The ASGI scope uvicorn gives an authorized JSON ``POST`` to ``path`` (for driving an app without a server)."""
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},  # what uvicorn announces
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"authorization", f"Bearer {api_key}".encode()), (b"content-type", b"application/json")],
        "client": ("127.0.0.1", 50000),
        "server": ("test", 80),
    }
