"""Embeddings: ``POST /v1/embeddings`` request and response.

Reference: https://platform.openai.com/docs/api-reference/embeddings
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from openai_routes.protocol.common import OpenAIModel, PromptField, split_prompts


class EmbeddingCreateParams(OpenAIModel):
    model: str = Field(min_length=1)
    # The same shapes as a completion prompt: text, texts, token ids, or lists of token ids.
    input: PromptField
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1)
    user: str | None = None

    def inputs(self) -> list[str | list[int]]:
        return split_prompts(self.input)


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class CreateEmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage
