"""The small interface the routes use to talk to a model engine, and the engine-side types.

Nothing here knows vLLM or the OpenAI protocol: ``engines/vllm_engine.py`` implements these protocols on
vLLM's ``AsyncLLM``, and the routers convert requests to ``SamplingOptions`` in one place
(``protocol.common.SamplingRequest.sampling_options``).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

Task = Literal["chat", "embed"]


class EngineInputError(ValueError):
    """The engine refused a request's parameters (a client error, reported as 400)."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class EngineUnavailableError(RuntimeError):
    """The engine is dead or shutting down (reported as 503)."""


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


@dataclass(frozen=True)
class StructuredOutput:
    """Constrain decoding: exactly one of the fields is set."""

    json_schema: dict[str, Any] | None = None
    json_object: bool = False


@dataclass(frozen=True)
class ParsedToolCalls:
    """What a model's tool-call parser found in a finished output."""

    content: str | None
    calls: list[tuple[str, str]]  # (function name, arguments as a JSON string)


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

    def tokenize(self, text: str, add_special_tokens: bool = True) -> list[int]: ...

    def num_in_flight(self) -> int: ...


@runtime_checkable
class GenerateEngine(Engine, Protocol):
    @property
    def has_tool_parser(self) -> bool:
        """Whether a tool-call parser is configured for the model (``tool_choice: auto`` needs one)."""
        ...

    def render_chat(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None) -> list[int]:
        """Apply the model's chat template (with the generation prompt and the tools) and tokenize."""
        ...

    def parse_tool_calls(self, text: str, tools: list[dict[str, Any]]) -> ParsedToolCalls:
        """Read tool calls out of a finished output with the configured parser."""
        ...

    def decode(self, token_ids: Sequence[int]) -> str: ...

    def generate(
        self, prompt_token_ids: list[int], options: SamplingOptions, request_id: str
    ) -> AsyncGenerator[GenerationStep, None]:
        """Stream deltas; closing the iterator early aborts the request in the engine."""
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
