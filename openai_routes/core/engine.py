"""The small interface the routes use to talk to a model engine, and the engine-side types.

Nothing here knows vLLM or the OpenAI protocol: ``engines/vllm_generator.py`` and ``engines/vllm_embedder.py``
implement these protocols on vLLM's ``AsyncLLM``, and the routers convert requests to ``SamplingOptions`` in one place
(``protocol.common.SamplingRequest.sampling_options``).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

Task = Literal["chat", "embed"]


class EngineInputError(ValueError):
    """The engine refused a request's parameters (a client error, reported as 400)."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class EngineUnavailableError(RuntimeError):
    """The engine is dead or shutting down (reported as 503)."""


class EngineBusyError(EngineUnavailableError):
    """The engine's own queue is full (reported as 503 with ``Retry-After``)."""


class EngineFailedError(RuntimeError):
    """The engine failed a request while running it (reported as 500): what it produced is no answer."""


@dataclass(frozen=True)
class SamplingOptions:
    max_tokens: int
    n: int = 1
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    repetition_penalty: float | None = None
    logit_bias: dict[int, float] | None = None
    logprobs: int | None = None
    prompt_logprobs: int | None = None
    min_tokens: int = 0
    ignore_eos: bool = False
    structured: StructuredOutput | None = None
    parsed_tools: list[dict[str, Any]] | None = None  # the tools the model's own parser will look for in the output


@dataclass(frozen=True)
class StructuredOutput:
    """Constrain decoding: exactly one of ``json_schema``, ``json_object`` and ``structural_tag`` (xgrammar's
    format) is set; ``param`` is the request field the constraint comes from (named in the error when the grammar
    backend cannot compile it)."""

    json_schema: dict[str, Any] | None = None
    json_object: bool = False
    structural_tag: dict[str, Any] | None = None
    param: str = "response_format"


@dataclass(frozen=True)
class OutputEvent:
    """A piece of one choice's output as it is read: answer text, reasoning text, the start of tool call
    ``index`` (``text`` is its name), or a piece of that call's arguments."""

    kind: Literal["text", "reasoning", "call", "arguments"]
    text: str = ""
    index: int = 0


class OutputReader(Protocol):
    """Reads one choice's output into events delta by delta, as it is generated (``finished`` on its last delta);
    it may hold text back until the next delta shows what it is."""

    def feed(self, text: str, token_ids: Sequence[int], finished: bool) -> list[OutputEvent]: ...


@dataclass(frozen=True)
class ModelCapabilities:
    """What a generating model does beyond plain text, decided once when it loads."""

    tool_parser: bool = False  # its own tool-call parser; without one, ``auto`` uses the generic format (tool_format)
    reasoning_parser: bool = False  # its reasoning is read apart from its answer, and counted in usage
    renders_tools: bool = True  # its chat template writes the ``tools`` it is given into the prompt
    # what a request that leaves a sampling field unset gets (generation_config.json under the config's overrides)
    sampling_defaults: Mapping[str, float | int] = field(default_factory=dict, hash=False)
    max_images: int = 0  # images one prompt may hold (vLLM's limit_mm_per_prompt); 0: it reads no images


@dataclass(frozen=True)
class ImageInput:
    """A decoded image of a prompt: ``image`` is an RGB ``PIL.Image`` (``pipeline.images`` decodes and checks it),
    ``param`` the request field it came from (named in the engine's errors about it), ``detail`` OpenAI's."""

    image: Any
    param: str
    detail: str = "auto"


@dataclass(frozen=True)
class RenderedPrompt:
    """A conversation rendered for the engine: its token ids, image tokens included, and with images the engine's
    own processed input for them (opaque to the routes: handed back to ``generate``)."""

    token_ids: list[int]
    media: Any = None


@dataclass(frozen=True)
class TokenLogprob:
    token_id: int
    token: str
    logprob: float
    top: Sequence[tuple[int, str, float]] = ()  # (token id, text, logprob), most likely first


@dataclass
class OutputDelta:
    """New output of one choice since the previous step."""

    index: int
    text: str
    token_ids: Sequence[int]
    logprobs: Sequence[TokenLogprob] | None = None
    finish_reason: Literal["stop", "length"] | None = None


@dataclass
class GenerationStep:
    choices: list[OutputDelta]
    prompt_tokens: int
    cached_tokens: int = 0
    prompt_logprobs: Sequence[TokenLogprob | None] | None = None
    finished: bool = False


@dataclass(frozen=True)
class TokenCounts:
    """The engine's token counts for a whole request; ``reasoning`` is None for a model without a reasoning parser."""

    prompt: int
    completion: int
    cached: int
    reasoning: int | None

    @property
    def total(self) -> int:
        return self.prompt + self.completion


@dataclass
class Embedding:
    vector: list[float]
    prompt_tokens: int


@runtime_checkable
class Engine(Protocol):
    """What every engine offers: its limits, health and token counting."""

    @property
    def max_model_len(self) -> int: ...

    def is_healthy(self) -> bool: ...

    async def tokenize(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Token ids of ``text`` (off the event loop: long texts take milliseconds)."""
        ...

    def num_in_flight(self) -> int: ...

    def shutdown(self) -> None:
        """Stop the engine (its processes and threads); the service calls it once, at shutdown."""
        ...


@runtime_checkable
class GenerateEngine(Engine, Protocol):
    @property
    def capabilities(self) -> ModelCapabilities: ...

    async def render_chat(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None = None,
        template_kwargs: dict[str, Any] | None = None,
        images: Sequence[ImageInput] = (),
    ) -> RenderedPrompt:
        """Apply the model's chat template (with the generation prompt, the tools and the caller's extra template
        variables) and tokenize. ``images`` are the ``{"type": "image"}`` parts of the messages' content lists, in
        order; their tokens are in the prompt (the engine's own count)."""
        ...

    def output_reader(
        self,
        tools: list[dict[str, Any]] | None,
        tool_choice: str | dict[str, Any],
        prompt_token_ids: Sequence[int],
    ) -> OutputReader:
        """A reader of one choice's reasoning, text and tool calls by the model's parsers (the generic format's
        tool-call parser for a model without one). ``tool_choice`` is OpenAI's: ``"none"``, ``"auto"``,
        ``"required"`` or a named function."""
        ...

    async def decode(self, token_ids: Sequence[int]) -> str:
        """The text of ``token_ids`` (a 400 for ids outside the vocabulary)."""
        ...

    def count_reasoning_tokens(self, token_ids: Sequence[int]) -> int:
        """How many of a choice's generated ``token_ids`` are reasoning, by the model's reasoning parser (vLLM's
        ``count_reasoning_tokens``); only asked of a model whose ``capabilities.reasoning_parser`` is set."""
        ...

    def generate(
        self, prompt_token_ids: list[int], options: SamplingOptions, request_id: str, media: Any = None
    ) -> AsyncGenerator[GenerationStep, None]:
        """Stream deltas; closing the iterator early aborts the request in the engine. ``media`` is a
        ``RenderedPrompt``'s, for a prompt with images."""
        ...


@runtime_checkable
class EmbedEngine(Engine, Protocol):
    @property
    def dimensions(self) -> int:
        """The model's native output size."""
        ...

    def accepts_dimensions(self, dimensions: int) -> bool:
        """Whether the model can output ``dimensions`` (its native size, or a Matryoshka size)."""
        ...

    async def embed(self, prompt_token_ids: list[int], request_id: str, dimensions: int | None = None) -> Embedding:
        """One input's vector, pooled and normalised as the model's config says."""
        ...
