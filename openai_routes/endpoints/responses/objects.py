"""The Responses API's ``response`` object: its settings, usage and status, and the list shapes around it (its
output items are ``items.py``'s).

Reference: https://platform.openai.com/docs/api-reference/responses/object (``../shared/RESPONSES_CONTRACT.md``).
"""

from __future__ import annotations

from typing import Any, Literal, get_args

from pydantic import BaseModel, Field

from openai_routes.core.engine import TokenCounts
from openai_routes.endpoints.responses.items import OutputItem

Status = Literal["queued", "in_progress", "completed", "incomplete", "failed", "cancelled"]


class InputTokensDetails(BaseModel):
    cached_tokens: int = 0
    cache_write_tokens: int = 0  # vLLM's prefix cache is written as a side effect, never as a billed write
    cache_write_tokens_details: dict[str, int] | None = None


class OutputTokensDetails(BaseModel):
    reasoning_tokens: int = 0


class ResponseUsage(BaseModel):
    input_tokens: int
    input_tokens_details: InputTokensDetails
    output_tokens: int
    output_tokens_details: OutputTokensDetails
    total_tokens: int

    @classmethod
    def of(cls, counts: TokenCounts) -> ResponseUsage:
        return cls(
            input_tokens=counts.prompt,
            input_tokens_details=InputTokensDetails(cached_tokens=counts.cached),
            output_tokens=counts.completion,
            output_tokens_details=OutputTokensDetails(reasoning_tokens=counts.reasoning or 0),
            total_tokens=counts.total,
        )


ErrorCode = Literal["server_error", "rate_limit_exceeded", "invalid_prompt"]  # the ones of OpenAI's that apply here


class ResponseError(BaseModel):
    """Why a response failed: OpenAI's codes are a closed list, so any other failure is a ``server_error``."""

    code: ErrorCode
    message: str
    param: str | None = None
    type: str | None = None
    misalignment: dict[str, Any] | None = None

    @classmethod
    def of(cls, code: str | None, message: str) -> ResponseError:
        known: tuple[str, ...] = get_args(ErrorCode)
        return cls(code=code if code in known else "server_error", message=message)  # type: ignore[arg-type]


class IncompleteDetails(BaseModel):
    reason: Literal["max_output_tokens", "content_filter"]


class Reasoning(BaseModel):
    """The request's ``reasoning``, echoed: a model with a reasoning parser reasons as its template says, whatever
    the effort asked."""

    effort: Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"] | None = None
    summary: Literal["auto", "concise", "detailed"] | None = None
    generate_summary: Literal["auto", "concise", "detailed"] | None = None
    context: Literal["auto", "current_turn", "all_turns"] | None = None
    mode: str | None = None


class Response(BaseModel):
    """Every field of ``openai.types.responses.Response``: the settings used (the request's, else the model's
    generation defaults, else vLLM's neutral values), and ``null`` for what OpenAI's hosted features would set."""

    id: str
    object: Literal["response"] = "response"
    created_at: int
    completed_at: int | None = None
    status: Status
    background: bool = False
    error: ResponseError | None = None
    incomplete_details: IncompleteDetails | None = None
    instructions: str | None = None
    max_output_tokens: int | None = None
    max_tool_calls: int | None = None
    model: str
    output: list[OutputItem] = Field(default_factory=list)
    parallel_tool_calls: bool = True
    previous_response_id: str | None = None
    conversation: dict[str, str] | None = None  # {"id": "conv_..."} when the response belongs to a conversation
    store: bool = True
    temperature: float = 1.0
    top_p: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    top_logprobs: int = 0
    text: dict[str, Any] = Field(default_factory=lambda: {"format": {"type": "text"}, "verbosity": None})
    tool_choice: str | dict[str, Any] = "auto"
    tools: list[dict[str, Any]] = Field(default_factory=list)
    truncation: Literal["disabled", "auto"] = "disabled"
    reasoning: Reasoning | None = None
    service_tier: Literal["default"] = "default"
    usage: ResponseUsage | None = None
    user: str | None = None
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    # OpenAI's hosted features (prompt templates, prompt-cache options, moderation, built-in tools): never used here.
    prompt: dict[str, Any] | None = None
    prompt_cache_retention: Literal["in_memory", "24h"] | None = None
    prompt_cache_options: dict[str, Any] | None = None
    prompt_cache_diagnostics: dict[str, Any] | None = None
    access_programs: dict[str, Any] | None = None
    image: dict[str, Any] | None = None
    input_transformations: list[dict[str, Any]] | None = None
    moderation: dict[str, Any] | None = None
    tool_usage: dict[str, Any] | None = None


class InputTokenCount(BaseModel):
    """``POST /v1/responses/input_tokens``: what a create with the same body would report as ``input_tokens``."""

    object: Literal["response.input_tokens"] = "response.input_tokens"
    input_tokens: int


class DeletedResponse(BaseModel):
    id: str
    object: Literal["response"] = "response"
    deleted: bool = True
