"""``GET /v1/models`` and ``GET /v1/models/{id}``: every configured id and alias (ids may contain ``/``)."""

from __future__ import annotations

from fastapi import APIRouter

from openai_routes.protocol.models import Model, ModelList
from openai_routes.registry import ModelRegistry


def create_router(registry: ModelRegistry) -> APIRouter:
    router = APIRouter()

    @router.get("/models")
    async def list_models() -> ModelList:
        return ModelList(
            data=[Model(id=name, created=model.created, owned_by=model.owned_by) for name, model in registry.names()]
        )

    @router.get("/models/{model_id:path}")
    async def retrieve_model(model_id: str) -> Model:
        model = registry.get(model_id)
        return Model(id=model_id, created=model.created, owned_by=model.owned_by)

    return router
