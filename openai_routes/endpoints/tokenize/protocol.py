"""Tokenizer endpoints: ``POST /tokenize`` and ``POST /detokenize`` requests and responses, as vLLM's server has them.

Reference: vLLM's ``vllm/entrypoints/serve/tokenize/protocol.py``. vLLM takes a union of a completion-style
request (``prompt``) and a chat-style one (``messages``); here it is one model with exactly one of the two, so
a validation error names a field of the request rather than a member of the union. vLLM's rendering options
are accepted at their defaults; a value the chat pipeline cannot honour is a 400, never silently ignored.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, ValidationInfo, field_validator

from openai_routes.protocol.chat import ChatMessage
from openai_routes.protocol.common import INT64, OpenAIModel
from openai_routes.protocol.tools import ChatCompletionTool

# Options of vLLM's tokenize request that chat completions never use: the one value of each that is refused.
_UNSUPPORTED = {"add_generation_prompt": False, "continue_final_message": True, "return_token_strs": True}


class TokenizeRequest(OpenAIModel):
    """``prompt`` is tokenized as ``/v1/completions`` tokenizes it; ``messages`` (and ``tools``) are rendered
    with the chat template and the generation prompt, as ``/v1/chat/completions`` renders them."""

    model: str | None = Field(default=None, min_length=1)
    prompt: str | None = None
    messages: list[ChatMessage] | None = Field(default=None, min_length=1, validate_default=True)
    tools: list[ChatCompletionTool] | None = None
    add_special_tokens: bool | None = Field(
        default=None,
        description="Add the tokenizer's special tokens (BOS, ...): default true for 'prompt', false for 'messages' "
        "(the chat template writes them).",
    )
    add_generation_prompt: bool = True
    continue_final_message: bool = False
    return_token_strs: bool | None = False

    @field_validator("messages")
    @classmethod
    def _prompt_or_messages(cls, value: list[ChatMessage] | None, info: ValidationInfo) -> list[ChatMessage] | None:
        has_prompt = info.data.get("prompt") is not None
        if value is None and not has_prompt:
            raise ValueError("one of 'prompt' or 'messages' is required")
        if value is not None and has_prompt:
            raise ValueError("give either 'prompt' or 'messages', not both")
        return value

    @field_validator("add_special_tokens")
    @classmethod
    def _special_tokens(cls, value: bool | None, info: ValidationInfo) -> bool | None:
        if value and info.data.get("messages") is not None:
            raise ValueError("only false is supported with 'messages' (the chat template writes the special tokens)")
        return value

    @field_validator("add_generation_prompt", "continue_final_message", "return_token_strs")
    @classmethod
    def _supported(cls, value: Any, info: ValidationInfo) -> Any:
        refused = _UNSUPPORTED[str(info.field_name)]
        if value is refused:
            raise ValueError(f"only {str(not refused).lower()} is supported")
        return value

    @property
    def special_tokens(self) -> bool:
        """Whether a ``prompt`` is tokenized with the special tokens (vLLM's default: yes)."""
        return self.add_special_tokens if self.add_special_tokens is not None else True


class TokenizeResponse(BaseModel):
    count: int
    max_model_len: int
    tokens: list[int]
    token_strs: list[str] | None = None


class DetokenizeRequest(OpenAIModel):
    model: str | None = Field(default=None, min_length=1)
    tokens: list[int]

    @field_validator("tokens")
    @classmethod
    def _token_ids(cls, value: list[int]) -> list[int]:
        if any(not 0 <= token <= INT64 for token in value):
            raise ValueError("token ids are integers from 0 up to the vocabulary size")
        return value


class DetokenizeResponse(BaseModel):
    prompt: str
