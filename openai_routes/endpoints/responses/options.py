"""The options of a Responses request that shape its output, not its input: ``text`` (its format and verbosity),
``reasoning``, ``include`` and ``service_tier``, with OpenAI's values (``openai.types.responses.ResponseCreateParams``).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from openai_routes.protocol.common import OpenAIModel
from openai_routes.protocol.tools import FUNCTION_NAME, check_schema


class TextFormat(OpenAIModel):
    type: Literal["text", "json_object", "json_schema"] = "text"
    name: str = Field(default="response", pattern=FUNCTION_NAME)
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None

    @model_validator(mode="after")
    def _schema_given(self) -> TextFormat:
        if self.type == "json_schema":
            if self.schema_ is None:
                raise ValueError("'schema' is required when type is 'json_schema'")
            check_schema(self.schema_)
        return self

    def wire(self) -> dict[str, Any]:
        if self.type != "json_schema":
            return {"type": self.type}
        return {"type": "json_schema", "name": self.name, "schema": self.schema_, "strict": self.strict,
                "description": self.description}  # fmt: skip

    def response_format(self) -> dict[str, Any] | None:
        if self.type == "text":
            return None
        if self.type == "json_object":
            return {"type": "json_object"}
        schema = {"name": self.name, "schema": self.schema_, "strict": self.strict, "description": self.description}
        return {"type": "json_schema", "json_schema": schema}


class TextConfig(OpenAIModel):
    format: TextFormat = Field(default_factory=TextFormat)
    verbosity: Literal["low", "medium", "high"] | None = None  # echoed; the model's length is its own

    def wire(self) -> dict[str, Any]:
        return {"format": self.format.wire(), "verbosity": self.verbosity}


class ReasoningConfig(OpenAIModel):
    """``reasoning``: accepted and echoed (a reasoning model here reasons as its chat template says)."""

    effort: Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"] | None = None
    summary: Literal["auto", "concise", "detailed"] | None = None
    generate_summary: Literal["auto", "concise", "detailed"] | None = None


Includable = Literal[
    "file_search_call.results",
    "web_search_call.results",
    "web_search_call.action.sources",
    "message.input_image.image_url",
    "computer_call_output.output.image_url",
    "code_interpreter_call.outputs",
    "reasoning.encrypted_content",
    "message.output_text.logprobs",
]
ServiceTier = Literal["auto", "default", "flex", "scale", "priority", "fast", "ultrafast"]
