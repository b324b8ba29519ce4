"""The Responses API's output items: a message, a function call, a reasoning item, with every field OpenAI's types
declare (``openai.types.responses.ResponseOutputMessage``, ``ResponseFunctionToolCall``, ``ResponseReasoningItem``);
what never applies here is sent as ``null``, so a schema-strict client finds every field.

Reference: https://platform.openai.com/docs/api-reference/responses/object#responses/object-output
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

ItemStatus = Literal["in_progress", "completed", "incomplete"]


class OutputText(BaseModel):
    type: Literal["output_text"] = "output_text"
    text: str
    annotations: list[Any] = Field(default_factory=list)
    logprobs: list[Any] = Field(default_factory=list)


class OutputMessage(BaseModel):
    id: str
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"
    status: ItemStatus
    content: list[OutputText]
    phase: Literal["commentary", "final_answer"] | None = None


class FunctionToolCall(BaseModel):
    """A call of one of the request's function tools (``async``, ``caller`` and ``namespace`` are for OpenAI's
    hosted tool programs: always null here)."""

    model_config = ConfigDict(serialize_by_alias=True, validate_by_name=True)

    id: str
    type: Literal["function_call"] = "function_call"
    call_id: str
    name: str
    arguments: str
    status: ItemStatus
    async_: bool | None = Field(default=None, alias="async")
    caller: dict[str, Any] | None = None
    namespace: str | None = None


class ReasoningText(BaseModel):
    type: Literal["reasoning_text"] = "reasoning_text"
    text: str


class OutputReasoning(BaseModel):
    """The model's reasoning as its reasoning parser reads it: plain text, never encrypted, no summary."""

    id: str
    type: Literal["reasoning"] = "reasoning"
    summary: list[Any] = Field(default_factory=list)
    content: list[ReasoningText]
    encrypted_content: str | None = None
    status: ItemStatus


OutputItem = OutputMessage | FunctionToolCall | OutputReasoning
