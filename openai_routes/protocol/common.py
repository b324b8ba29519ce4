"""Fields and objects shared by the chat and text completion protocols.

OpenAI's fixed bounds live here, on the schema; limits that depend on configuration live in ``limits.py``.
Unknown request fields are accepted and ignored, as OpenAI's SDK and LangChain send extras. JSON ``null`` for
a field that has a default means "not given", as OpenAI reads it (JS clients and LiteLLM send nulls).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from openai_routes.core.engine import SamplingOptions, TokenCounts

INT64 = 2**63 - 1
INT32 = 2**31 - 1  # the engine serializes sampling ints with msgpack: larger ones fail inside vLLM

TokenId = Annotated[int, Field(ge=0, le=2**31 - 1)]

# Text, texts, token ids or lists of token ids (completion prompts, embedding inputs).
# Order matters: pydantic tries the union members left to right in "smart" mode.
PromptField = (
    str
    | Annotated[list[str], Field(min_length=1)]
    | Annotated[list[TokenId], Field(min_length=1)]
    | Annotated[list[Annotated[list[TokenId], Field(min_length=1)]], Field(min_length=1)]
)


def split_prompts(value: str | list[str] | list[int] | list[list[int]]) -> list[str | list[int]]:
    """A prompt field as a list of single prompts, each text or token ids."""
    if isinstance(value, str):
        return [value]
    if all(isinstance(item, int) for item in value):
        return [list(value)]  # type: ignore[arg-type]
    return list(value)  # type: ignore[arg-type]


StopField = Annotated[
    str | list[str] | None,
    Field(description="Up to 4 sequences where generation stops; the stop sequence is not returned."),
]


class OpenAIModel(BaseModel):
    """Base of every request object: unknown fields are ignored, null for an optional field means "not given"."""

    model_config = ConfigDict(extra="ignore")

    @model_validator(mode="before")
    @classmethod
    def _null_is_not_given(cls, data: Any) -> Any:
        """Drop nulls so defaults apply; a null for a required field stays and is refused as the wrong type."""
        if not isinstance(data, dict) or not any(value is None for value in data.values()):
            return data
        required = {field.alias or name for name, field in cls.model_fields.items() if field.is_required()}
        return {key: value for key, value in data.items() if value is not None or key in required}


class StreamOptions(OpenAIModel):
    include_usage: bool = False


class PromptTokensDetails(BaseModel):
    cached_tokens: int = 0


class CompletionTokensDetails(BaseModel):
    reasoning_tokens: int = 0


class CompletionUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails | None = None
    completion_tokens_details: CompletionTokensDetails | None = None  # with a reasoning parser, as vLLM

    @classmethod
    def of(cls, counts: TokenCounts) -> CompletionUsage:
        return cls(
            prompt_tokens=counts.prompt,
            completion_tokens=counts.completion,
            total_tokens=counts.total,
            prompt_tokens_details=PromptTokensDetails(cached_tokens=counts.cached),
            completion_tokens_details=(
                None if counts.reasoning is None else CompletionTokensDetails(reasoning_tokens=counts.reasoning)
            ),
        )


class SamplingRequest(OpenAIModel):
    """The sampling parameters both completion endpoints take, including vLLM's ``extra_body`` fields."""

    model: str = Field(min_length=1)
    n: int = Field(default=1, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    stop: StopField = None
    seed: int | None = Field(default=None, ge=-INT64 - 1, le=INT64)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    logit_bias: dict[str, Annotated[float, Field(ge=-100, le=100)]] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    # vLLM's extra sampling fields, sent through the SDK's ``extra_body``.
    top_k: int | None = Field(default=None, ge=-1, le=INT32)
    min_p: float | None = Field(default=None, ge=0, le=1)
    repetition_penalty: float | None = Field(default=None, gt=0, le=2)
    min_tokens: int | None = Field(default=None, ge=0, le=INT32)
    ignore_eos: bool = False

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, value: str | list[str] | None) -> str | list[str] | None:
        items = [value] if isinstance(value, str) else value or []
        if len(items) > 4:
            raise ValueError("at most 4 stop sequences are allowed")
        if any(item == "" for item in items):
            raise ValueError("stop sequences must not be empty")
        return value

    @field_validator("stream_options")
    @classmethod
    def _only_when_streaming(cls, value: StreamOptions | None, info: ValidationInfo) -> StreamOptions | None:
        if value is not None and not info.data.get("stream"):
            raise ValueError("'stream_options' is only allowed when 'stream' is true")
        return value

    @field_validator("logit_bias")
    @classmethod
    def _token_ids(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        for key in value or {}:
            if not (key.isascii() and key.isdigit()) or int(key) > INT64:
                raise ValueError("keys must be token ids (non-negative integers as strings)")
        return value

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    def stop_list(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    def sampling_options(self, max_tokens: int, logprobs: int | None, echo_logprobs: bool = False) -> SamplingOptions:
        """The one conversion from request to engine parameters."""
        return SamplingOptions(
            max_tokens=max_tokens,
            n=self.n,
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            min_p=self.min_p,
            seed=self.seed,
            stop=tuple(self.stop_list()),
            presence_penalty=self.presence_penalty,
            frequency_penalty=self.frequency_penalty,
            repetition_penalty=self.repetition_penalty,
            logit_bias={int(k): v for k, v in (self.logit_bias or {}).items()} or None,
            logprobs=logprobs,
            prompt_logprobs=logprobs if echo_logprobs else None,
            min_tokens=self.min_tokens or 0,
            ignore_eos=self.ignore_eos,
        )


FinishReason = Literal["stop", "length", "tool_calls", "content_filter"]


# OpenAI's metadata: up to 16 pairs, keys up to 64 characters, values up to 512.
Metadata = Annotated[
    dict[Annotated[str, Field(max_length=64)], Annotated[str, Field(max_length=512)]], Field(max_length=16)
]


class ObjectList(BaseModel):
    """OpenAI's cursor page: ``data`` in order, the ids at its ends, and whether more follow."""

    object: Literal["list"] = "list"
    data: list[Any]
    first_id: str | None
    last_id: str | None
    has_more: bool

    @classmethod
    def of(cls, data: list[Any], has_more: bool) -> ObjectList:
        ids = [item["id"] if isinstance(item, dict) else item.id for item in data]
        return cls(data=data, first_id=ids[0] if ids else None, last_id=ids[-1] if ids else None, has_more=has_more)
