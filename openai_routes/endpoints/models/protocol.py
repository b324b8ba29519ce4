"""Models: ``GET /v1/models`` and ``GET /v1/models/{id}``.

Reference: https://platform.openai.com/docs/api-reference/models. ``max_model_len`` is vLLM's extension of
OpenAI's object (its ``ModelCard`` has it): the context length, which clients size their requests from; so are
``root`` (the model whose engine serves it) and ``parent`` (a LoRA adapter's base model, null for a base).
``input_modalities`` is ours (OpenRouter's name for it): ``["text", "image"]`` for a model that takes image parts,
``["text"]`` otherwise; the playground offers to attach images by it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel


class Model(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    max_model_len: int
    root: str
    parent: str | None = None
    input_modalities: list[Literal["text", "image"]] = ["text"]


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Model]
