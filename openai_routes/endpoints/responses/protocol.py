"""The Responses API's request: ``POST /v1/responses`` and its input items (the ``response`` object is in
``objects.py``).

Reference: https://platform.openai.com/docs/api-reference/responses (the subset the official SDK relies on:
``../shared/RESPONSES_CONTRACT.md``). A request owns its conversion to a chat request (``chat_request``): the
Responses API is another wire shape over the same generation, formats and tool calls.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import (
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from openai_routes.endpoints.responses.options import Includable, ReasoningConfig, ServiceTier, TextConfig
from openai_routes.protocol.chat import ChatCompletionRequest
from openai_routes.protocol.common import INT32, INT64, OpenAIModel
from openai_routes.protocol.items import InputItem, typed_item
from openai_routes.protocol.tools import FunctionDefinition

VLLM_EXTRAS = {"seed", "top_k", "min_p", "repetition_penalty", "min_tokens", "ignore_eos", "presence_penalty",
               "frequency_penalty"}  # fmt: skip
NEUTRAL = {"temperature": 1.0, "top_p": 1.0, "presence_penalty": 0.0, "frequency_penalty": 0.0}  # vLLM's own
MIN_OUTPUT_TOKENS = 16  # OpenAI refuses less (integer_below_min_value)


class FunctionTool(FunctionDefinition):
    """A flat function tool: chat's function definition with the ``type`` beside it (no nested ``function``)."""

    type: Literal["function"]

    def chat_tool(self) -> dict[str, Any]:
        return {"type": "function", "function": FunctionDefinition.model_validate(self.model_dump(exclude={"type"}))}

    def echo(self) -> dict[str, Any]:
        """The tool as the response lists it, every field of OpenAI's ``FunctionTool``. ``strict`` is what the
        request said, ``false`` when it said nothing: arguments follow the schema under ``required`` or a named
        ``tool_choice`` (constrained decoding), but not always under ``auto``, so OpenAI's default (true) would
        promise more than is kept."""
        return {"type": "function", "name": self.name, "description": self.description,
                "parameters": self.parameters, "strict": bool(self.strict), "allowed_callers": None,
                "async": None, "defer_loading": None, "output_schema": None}  # fmt: skip


class NamedFunction(OpenAIModel):
    type: Literal["function"]
    name: str


class ConversationRef(OpenAIModel):
    """``conversation`` as an object: ``{"id": "conv_..."}``."""

    id: str = Field(min_length=1)


class ResponsesRequest(OpenAIModel):
    """Fields OpenAI documents that change nothing here (``include``, ``reasoning``, ``text.verbosity``,
    ``prompt_cache_key``, ``safety_identifier``, ``service_tier``, ``max_tool_calls``, ``top_logprobs``) are checked
    against OpenAI's bounds and echoed; other unknown fields are ignored. ``truncation: auto`` drops the oldest input
    items when the prompt does not fit (``truncation.py``)."""

    model: str = Field(min_length=1)
    input: list[InputItem] = Field(min_length=1)
    instructions: str | None = None
    max_output_tokens: int | None = Field(default=None, ge=MIN_OUTPUT_TOKENS)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    text: TextConfig = Field(default_factory=TextConfig)
    tools: list[FunctionTool] = Field(default_factory=list)
    tool_choice: Literal["none", "auto", "required"] | NamedFunction = "auto"
    parallel_tool_calls: bool = True
    previous_response_id: str | None = Field(default=None, min_length=1)
    conversation: str | ConversationRef | None = None
    store: bool = True
    background: bool = False
    stream: bool = False
    metadata: dict[str, str] | None = Field(default=None, max_length=16)
    user: str | None = None
    truncation: Literal["auto", "disabled"] = "disabled"
    include: list[Includable] | None = None
    reasoning: ReasoningConfig | None = None
    max_tool_calls: int | None = Field(default=None, ge=0, le=INT32)
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    service_tier: ServiceTier | None = None
    prompt_cache_key: str | None = None
    safety_identifier: str | None = Field(default=None, max_length=128)
    # vLLM's extra sampling fields and chat's penalties (not in OpenAI's Responses request, but in its response), as
    # chat takes them through the SDK's ``extra_body`` (chat's bounds).
    seed: int | None = Field(default=None, ge=-INT64 - 1, le=INT64)
    top_k: int | None = Field(default=None, ge=-1, le=INT32)
    min_p: float | None = Field(default=None, ge=0, le=1)
    repetition_penalty: float | None = Field(default=None, gt=0, le=2)
    min_tokens: int | None = Field(default=None, ge=0, le=INT32)
    ignore_eos: bool = False
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)

    @field_validator("input", mode="before")
    @classmethod
    def _items(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [{"type": "message", "role": "user", "content": value}]
        if not isinstance(value, list):
            raise ValueError("input must be a string or an array of input items")
        return [typed_item(item) for item in value]

    @field_validator("tools", mode="before")
    @classmethod
    def _function_tools(cls, value: Any) -> Any:
        for tool in value if isinstance(value, list) else []:
            kind = tool.get("type") if isinstance(tool, dict) else None
            if kind != "function":
                raise ValueError(f"only function tools are supported here, not '{kind}'")
        return value

    @field_validator("tools")
    @classmethod
    def _unique_tools(cls, value: list[FunctionTool]) -> list[FunctionTool]:
        names = [tool.name for tool in value]
        if len(set(names)) != len(names):
            raise ValueError("tool names must be unique")
        return value

    @field_validator("tool_choice")
    @classmethod
    def _known_tool(cls, value: Any, info: ValidationInfo) -> Any:
        names = {tool.name for tool in info.data.get("tools") or []}
        if value == "required" and not names:
            raise ValueError("'required' needs at least one tool in 'tools'")
        if isinstance(value, NamedFunction) and value.name not in names:
            raise ValueError(f"tool '{value.name}' is not in 'tools'")
        return value

    @field_validator("conversation")
    @classmethod
    def _one_context(cls, value: str | ConversationRef | None, info: ValidationInfo) -> str | ConversationRef | None:
        if value is not None and info.data.get("previous_response_id") is not None:
            raise ValueError("'conversation' and 'previous_response_id' are mutually exclusive: send one of them")
        if isinstance(value, str) and not value:
            raise ValueError("'conversation' must be a conversation id")
        return value

    @property
    def conversation_id(self) -> str | None:
        return self.conversation.id if isinstance(self.conversation, ConversationRef) else self.conversation

    @model_validator(mode="after")
    def _background_is_stored(self) -> ResponsesRequest:
        if self.background and not self.store:
            raise ValueError("'background' needs 'store': a response run in the background is read back later")
        return self

    @property
    def tool_choice_wire(self) -> str | dict[str, Any]:
        return self.tool_choice if isinstance(self.tool_choice, str) else self.tool_choice.model_dump()

    def sampling_used(self, defaults: Mapping[str, Any]) -> dict[str, float]:
        """The temperature, top_p and penalties this request runs with: its own, else the model's generation
        defaults, else vLLM's neutral values (what ``engines.vllm_sampling`` applies the same way)."""
        given = self.model_dump(include=set(NEUTRAL))
        return {name: float(next(v for v in (given[name], defaults.get(name), neutral) if v is not None))
                for name, neutral in NEUTRAL.items()}  # fmt: skip

    def chat_request(self, messages: list[dict[str, Any]]) -> ChatCompletionRequest:
        """The chat request this one runs as, over ``messages`` (the chain's context, the instructions and the
        input, already in chat's shape)."""
        named = isinstance(self.tool_choice, NamedFunction)
        chat: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "max_completion_tokens": self.max_output_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "response_format": self.text.format.response_format(),
            "tools": [tool.chat_tool() for tool in self.tools] or None,
            "tool_choice": {"type": "function", "function": {"name": self.tool_choice.name}}  # type: ignore[union-attr]
            if named
            else self.tool_choice,
            "parallel_tool_calls": self.parallel_tool_calls,
            "user": self.user,
            **self.model_dump(include=VLLM_EXTRAS, exclude_none=True),
        }
        return ChatCompletionRequest.model_validate(chat)
