"""Chat completions: ``POST /v1/chat/completions`` request, response and stream chunk objects.

Reference: https://platform.openai.com/docs/api-reference/chat
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    Discriminator,
    Field,
    PrivateAttr,
    SerializerFunctionWrapHandler,
    Tag,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from openai_routes.protocol.common import CompletionUsage, FinishReason, Metadata, OpenAIModel, SamplingRequest
from openai_routes.protocol.tools import ChatCompletionTool, NamedToolChoice, ResponseFormat, ToolChoice

# Content parts OpenAI defines that no model served here reads, and the kind of input each carries.
UNSUPPORTED_PARTS = {"input_audio": "audio", "file": "file"}


def text_part_only(data: Any, unsupported: dict[str, str]) -> Any:
    """A content part as given, unless its ``type`` is one of ``unsupported`` (type -> what it carries): then the
    error says this model does not accept that input."""
    kind = data.get("type") if isinstance(data, dict) else None
    if isinstance(kind, str) and kind in unsupported:
        raise ValueError(f"this model does not accept {unsupported[kind]} input, only text content parts")
    return data


class TextPart(OpenAIModel):
    """A text content part; audio and file parts are refused here, so ``param`` points at the part."""

    type: Literal["text"]
    text: str

    @model_validator(mode="before")
    @classmethod
    def _supported(cls, data: Any) -> Any:
        return text_part_only(data, UNSUPPORTED_PARTS)


class ImageURL(OpenAIModel):
    """A data URL (``data:image/png;base64,...``) or an http(s) URL the server fetches (``pipeline.images``)."""

    url: str = Field(min_length=1)
    detail: Literal["auto", "low", "high"] = "auto"


class ImagePart(OpenAIModel):
    """An image content part. The Responses API's ``input_image`` parts become these too: ``source_param`` is then
    the request field errors name, and ``file_id`` a file of ``/v1/files`` read for the caller (no URL)."""

    type: Literal["image_url"]
    image_url: ImageURL
    _source_param: str | None = PrivateAttr(default=None)
    _file_id: str | None = PrivateAttr(default=None)

    @classmethod
    def of(cls, url: str | None, file_id: str | None, detail: str, param: str) -> ImagePart:
        """A part made by the server (the Responses API's conversion), naming its origin."""
        part = cls(type="image_url", image_url=ImageURL(url=url or f"file:{file_id}", detail=detail))  # type: ignore[arg-type]
        part._source_param = param
        part._file_id = file_id if url is None else None
        return part

    @property
    def source_param(self) -> str | None:
        return self._source_param

    @property
    def file_id(self) -> str | None:
        return self._file_id


def part_type(part: Any) -> Any:
    return part.get("type") if isinstance(part, dict) else getattr(part, "type", None)


# Tagged ``<type>`` so an error's param skips the tag (errors.is_discriminator_tag): ``messages[0].content[1]``.
ContentPart = Annotated[
    Annotated[TextPart, Tag("<text>")] | Annotated[ImagePart, Tag("<image_url>")],
    Discriminator(lambda part: "<image_url>" if part_type(part) == "image_url" else "<text>"),
]


class FunctionCall(BaseModel):
    name: str
    arguments: str


class ToolCall(BaseModel):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall

    def template_dict(self) -> dict[str, Any]:
        """As chat templates expect it: ``arguments`` parsed into a dict when it is JSON (as vLLM does)."""
        try:
            arguments: Any = json.loads(self.function.arguments)
        except ValueError:
            arguments = self.function.arguments
        return {"id": self.id, "type": "function", "function": {"name": self.function.name, "arguments": arguments}}


class ChatMessage(OpenAIModel):
    """One message of the conversation; ``developer`` is treated as ``system``."""

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None

    @field_validator("content", mode="before")
    @classmethod
    def _as_parts(cls, value: Any) -> Any:
        """A string is one text part: one shape downstream, and no union, so errors name the failing part."""
        if isinstance(value, str):
            return [{"type": "text", "text": value}]
        if value is not None and not isinstance(value, list):
            raise ValueError("content must be a string or an array of content parts")
        return value

    @model_validator(mode="after")
    def _required_fields(self) -> ChatMessage:
        if self.content is None and not (self.role == "assistant" and self.tool_calls):
            raise ValueError(f"a '{self.role}' message needs 'content'")
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a 'tool' message needs 'tool_call_id'")
        return self

    def text(self) -> str:
        return "".join(part.text for part in self.content or [] if isinstance(part, TextPart))

    @property
    def images(self) -> list[ImagePart]:
        return [part for part in self.content or [] if isinstance(part, ImagePart)]

    def template_dict(self) -> dict[str, Any]:
        """The message as chat templates expect it: plain string content, ``developer`` as ``system``; with images,
        a list of ``text`` and ``{"type": "image"}`` parts (the engine puts each image in its place)."""
        content: Any = self.text()
        if self.images:
            content = [{"type": "text", "text": part.text} if isinstance(part, TextPart) else {"type": "image"}
                       for part in self.content or []]  # fmt: skip
        message: dict[str, Any] = {"role": "system" if self.role == "developer" else self.role, "content": content}
        if self.name:
            message["name"] = self.name
        if self.tool_calls:
            message["tool_calls"] = [call.template_dict() for call in self.tool_calls]
        if self.tool_call_id:
            message["tool_call_id"] = self.tool_call_id
        return message


# apply_chat_template's own arguments: the server sets them; a request's template variables must not.
TEMPLATE_ARGUMENTS = frozenset(
    {"conversation", "messages", "tools", "documents", "chat_template", "add_generation_prompt",
     "continue_final_message", "tokenize", "padding", "truncation", "max_length", "return_tensors", "return_dict",
     "return_assistant_tokens_mask", "tokenizer_kwargs"}
)  # fmt: skip


class ChatCompletionRequest(SamplingRequest):
    """Cross-field checks are field validators reading earlier fields, so errors carry the right ``param``."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    response_format: ResponseFormat | None = None
    tools: list[ChatCompletionTool] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool = True
    chat_template_kwargs: dict[str, Any] | None = None  # vLLM's extension: extra chat template variables
    include_reasoning: bool = True  # vLLM's extension: false leaves a reasoning model's reasoning out
    store: bool = False  # true: kept for GET /v1/chat/completions (OpenAI's default is false)
    metadata: Metadata | None = None

    @field_validator("chat_template_kwargs")
    @classmethod
    def _template_variables(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        taken = sorted(set(value or {}) & TEMPLATE_ARGUMENTS)
        if taken:
            raise ValueError(f"these are set by the server, not by 'chat_template_kwargs': {', '.join(taken)}")
        return value

    @field_validator("top_logprobs")
    @classmethod
    def _top_logprobs(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value is not None and not info.data.get("logprobs"):
            raise ValueError("'top_logprobs' requires 'logprobs' to be true")
        return value

    @field_validator("tools")
    @classmethod
    def _unique_tools(cls, value: list[ChatCompletionTool] | None) -> list[ChatCompletionTool] | None:
        names = [tool.function.name for tool in value or []]
        if len(set(names)) != len(names):
            raise ValueError("tool names must be unique")
        return value

    @field_validator("tool_choice")
    @classmethod
    def _known_tool(cls, value: ToolChoice | None, info: ValidationInfo) -> ToolChoice | None:
        names = {tool.function.name for tool in info.data.get("tools") or []}
        if value == "required" and not names:
            raise ValueError("'required' needs at least one tool in 'tools'")
        if isinstance(value, NamedToolChoice) and value.function.name not in names:
            raise ValueError("the named tool is not in 'tools'")
        return value

    @property
    def tool_mode(self) -> str:
        """``none``, ``auto``, ``required`` or ``named``, with OpenAI's defaults."""
        if not self.tools:
            return "none"
        if isinstance(self.tool_choice, NamedToolChoice):
            return "named"
        return self.tool_choice or "auto"

    @property
    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    @property
    def engine_logprobs(self) -> int | None:
        return (self.top_logprobs or 0) if self.logprobs else None


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None


class ChatTokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChoiceLogprobs(BaseModel):
    content: list[ChatTokenLogprob] | None


class WithReasoning(BaseModel):
    """A message or delta that may carry the model's reasoning (vLLM's ``reasoning``, and ``reasoning_content`` as
    DeepSeek and older vLLM name it); both are left out when there is none, as OpenAI's own answers have neither."""

    reasoning: str | None = None
    reasoning_content: str | None = None

    @model_serializer(mode="wrap")
    def _without_empty_reasoning(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        if data.get("reasoning") is None:
            data.pop("reasoning", None)
            data.pop("reasoning_content", None)
        return data


class ChatCompletionMessage(WithReasoning):
    role: Literal["assistant"] = "assistant"
    content: str | None
    refusal: str | None = None
    tool_calls: list[ToolCall] | None = None


class ChatChoice(BaseModel):
    index: int
    message: ChatCompletionMessage
    finish_reason: FinishReason
    logprobs: ChoiceLogprobs | None = None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: CompletionUsage
    system_fingerprint: str | None = None


class WithoutNulls(BaseModel):
    """Serialised without its unset fields: a tool-call delta carries only what it adds (the SDK's stream helper
    merges deltas key by key, so ``"type": null`` after the head would erase the call's type)."""

    @model_serializer(mode="wrap")
    def _without_nulls(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return {key: value for key, value in handler(self).items() if value is not None}


class ChoiceDeltaToolCallFunction(WithoutNulls):
    name: str | None = None
    arguments: str | None = None


class ChoiceDeltaToolCall(WithoutNulls):
    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: ChoiceDeltaToolCallFunction | None = None


class ChoiceDelta(WithReasoning):
    role: Literal["assistant"] | None = None
    content: str | None = None
    tool_calls: list[ChoiceDeltaToolCall] | None = None


class ChunkChoice(BaseModel):
    index: int
    delta: ChoiceDelta
    finish_reason: FinishReason | None = None
    logprobs: ChoiceLogprobs | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: CompletionUsage | None = None
    system_fingerprint: str | None = None
