"""Models: ``GET /v1/models`` and ``GET /v1/models/{id}``.

Reference: https://platform.openai.com/docs/api-reference/models
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel


class Model(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Model]
