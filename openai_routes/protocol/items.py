"""The Responses API's input items, as ``POST /v1/responses`` takes them and as conversations keep them: messages
(with text parts), function calls, their outputs, and replayed reasoning.

Reference: https://platform.openai.com/docs/api-reference/responses/create#responses-create-input. Clients send
``response.output`` back as they received it, so output parts (``output_text`` with ``annotations``, ids, statuses)
are accepted too.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Discriminator, Field, Tag, model_validator

from openai_routes.protocol.chat import UNSUPPORTED_PARTS, part_type, text_part_only
from openai_routes.protocol.common import OpenAIModel

INPUT_PARTS = {"input_file": "file", "input_audio": "audio", **UNSUPPORTED_PARTS}


class ContentPart(OpenAIModel):
    """A text part: ``input_text``, or ``output_text`` as clients replay ``response.output`` (its ``id``,
    ``annotations`` and ``logprobs`` are ignored)."""

    type: Literal["input_text", "output_text", "text", "refusal"]
    text: str = ""
    refusal: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _supported(cls, data: Any) -> Any:
        return text_part_only(data, INPUT_PARTS)

    @property
    def content(self) -> str:
        return self.refusal or "" if self.type == "refusal" else self.text


class InputImagePart(OpenAIModel):
    """An ``input_image`` part: an ``image_url`` (a data URL or an http(s) URL) or the ``file_id`` of an upload."""

    type: Literal["input_image"]
    image_url: str | None = Field(default=None, min_length=1)
    file_id: str | None = Field(default=None, min_length=1)
    detail: Literal["auto", "low", "high"] = "auto"

    @model_validator(mode="after")
    def _one_source(self) -> InputImagePart:
        if (self.image_url is None) == (self.file_id is None):
            raise ValueError("an input_image part needs exactly one of 'image_url' and 'file_id'")
        return self

    @property
    def content(self) -> str:
        return ""

    @property
    def text(self) -> str:
        return ""

    def stored(self) -> dict[str, Any]:
        return {"type": "input_image", "image_url": self.image_url, "file_id": self.file_id, "detail": self.detail}


# Tagged ``<type>`` so an error's param skips the tag: ``input[0].content[1]``.
Part = Annotated[
    Annotated[ContentPart, Tag("<text>")] | Annotated[InputImagePart, Tag("<input_image>")],
    Discriminator(lambda part: "<input_image>" if part_type(part) == "input_image" else "<text>"),
]


def as_parts(value: Any) -> Any:
    """A string is one text part: one shape downstream, and errors name the failing part."""
    if isinstance(value, str):
        return [{"type": "input_text", "text": value}]
    if not isinstance(value, list):
        raise ValueError("content must be a string or an array of content parts")
    return value


Parts = Annotated[list[Part], BeforeValidator(as_parts)]
TextParts = Annotated[list[ContentPart], BeforeValidator(as_parts)]


class MessageItem(OpenAIModel):
    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: Parts

    def text(self) -> str:
        return "".join(part.content for part in self.content)

    @property
    def has_images(self) -> bool:
        return any(isinstance(part, InputImagePart) for part in self.content)


class FunctionCallItem(OpenAIModel):
    type: Literal["function_call"]
    call_id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    arguments: str


class FunctionCallOutputItem(OpenAIModel):
    type: Literal["function_call_output"]
    call_id: str = Field(min_length=1)
    output: TextParts

    def text(self) -> str:
        return "".join(part.content for part in self.output)


class ReasoningItem(OpenAIModel):
    """A replayed reasoning item: accepted, and left out of the prompt (as vLLM and OpenAI's stateless mode do)."""

    type: Literal["reasoning"]


def item_type(item: Any) -> Any:
    return item.get("type") if isinstance(item, dict) else getattr(item, "type", None)


# Tagged ``<type>`` so an error's param skips the tag (errors.is_discriminator_tag): ``input[0].content[0]``.
InputItem = Annotated[
    Annotated[MessageItem, Tag("<message>")]
    | Annotated[FunctionCallItem, Tag("<function_call>")]
    | Annotated[FunctionCallOutputItem, Tag("<function_call_output>")]
    | Annotated[ReasoningItem, Tag("<reasoning>")],
    Discriminator(
        lambda item: f"<{item_type(item)}>",
        custom_error_type="invalid_input_item",
        custom_error_message="an input item is a message, function_call, function_call_output or reasoning item",
    ),
]


def typed_item(item: Any) -> Any:
    """Messages may come without ``type`` (``{"role", "content"}``, the easy input form)."""
    if isinstance(item, dict) and "type" not in item and "role" in item:
        return {**item, "type": "message"}
    return item
