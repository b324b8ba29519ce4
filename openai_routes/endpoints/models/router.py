"""``GET /v1/models`` and ``GET /v1/models/{id}``: every configured id and alias (ids may contain ``/``), each
with its engine's context length (``max_model_len``) and whether it takes images (``input_modalities``)."""

from __future__ import annotations

from fastapi import APIRouter

from openai_routes.core.registry import ModelRegistry, ServedModel
from openai_routes.endpoints.models.protocol import Model, ModelList


def model_object(name: str, model: ServedModel) -> Model:
    return Model(
        id=name,
        created=model.created,
        owned_by=model.owned_by,
        max_model_len=model.engine.max_model_len,
        root=model.root,
        parent=model.parent,
        input_modalities=["text", "image"] if model.reads_images else ["text"],
    )


def create_router(registry: ModelRegistry) -> APIRouter:
    router = APIRouter()

    @router.get("/models")
    async def list_models() -> ModelList:
        return ModelList(data=[model_object(name, model) for name, model in registry.names()])

    @router.get("/models/{model_id:path}")
    async def retrieve_model(model_id: str) -> Model:
        return model_object(model_id, registry.get(model_id))

    return router
