"""``POST /v1/load_lora_adapter`` and ``POST /v1/unload_lora_adapter``, vLLM's shapes and answers (200 with a plain
text line). Only admin keys reach them (``server.auth``: ``ADMIN_PATHS``); the work is the ``AdapterLoader``'s."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse

from openai_routes.core.adapters import AdapterLoader
from openai_routes.endpoints.lora.protocol import LoadLoRAAdapterRequest, UnloadLoRAAdapterRequest
from openai_routes.server.json_body import StrictJSONRoute

ADMIN_PATHS = frozenset({"/load_lora_adapter", "/unload_lora_adapter"})  # within /v1, as the key check sees them


def create_router(adapters: AdapterLoader) -> APIRouter:
    router = APIRouter(route_class=StrictJSONRoute)

    @router.post("/load_lora_adapter")
    async def load_lora_adapter(request: LoadLoRAAdapterRequest) -> PlainTextResponse:
        await adapters.load(request.lora_name, request.lora_path, request.base_model)
        return PlainTextResponse(f"Success: LoRA adapter '{request.lora_name}' added successfully.")

    @router.post("/unload_lora_adapter")
    async def unload_lora_adapter(request: UnloadLoRAAdapterRequest) -> PlainTextResponse:
        await adapters.unload(request.lora_name)
        return PlainTextResponse(f"Success: LoRA adapter '{request.lora_name}' removed successfully.")

    return router
