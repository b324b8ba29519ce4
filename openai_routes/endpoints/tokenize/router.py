"""``POST /tokenize`` and ``POST /detokenize``: the model's tokenizer, with vLLM's paths and shapes.

Served at the server's root as vLLM serves them (``app.create_root_app``). A ``prompt`` is tokenized exactly as
``/v1/completions`` tokenizes it and ``messages`` are rendered by ``render_messages``, the conversion chat uses,
so ``count`` is the ``usage.prompt_tokens`` the same input costs there. Without ``model`` the first chat model
is used (vLLM's default is its one served model). Nothing is submitted to the engine: no admission slot.
"""

from __future__ import annotations

from fastapi import APIRouter

from openai_routes.core.context import current
from openai_routes.core.engine import EngineInputError
from openai_routes.core.errors import bad_request
from openai_routes.core.limits import Limits, MediaLimits, check_request
from openai_routes.core.registry import ModelRegistry
from openai_routes.endpoints.tokenize.protocol import (
    DetokenizeRequest,
    DetokenizeResponse,
    TokenizeRequest,
    TokenizeResponse,
)
from openai_routes.pipeline.images import MediaAccess
from openai_routes.pipeline.prepare import render_messages
from openai_routes.server.json_body import StrictJSONRoute


def model_name(registry: ModelRegistry, requested: str | None) -> str:
    """The request's ``model``, or the first chat model served when it is left out."""
    if requested is not None:
        return requested
    for served in registry.models():
        if served.task == "chat":
            return served.id
    raise bad_request("'model' is required: this server has no chat model to default to.", "model")


def create_router(registry: ModelRegistry, limits: Limits, media: MediaLimits | None = None) -> APIRouter:
    router = APIRouter(route_class=StrictJSONRoute)
    media_limits = media or MediaLimits()

    @router.post("/tokenize")
    async def tokenize(request: TokenizeRequest) -> TokenizeResponse:
        name = model_name(registry, request.model)
        if request.messages is not None:
            served, engine = registry.generator(name)
            current().model = served.id
            check_request(limits, n=1, max_tokens=None, messages=len(request.messages))
            rendered = await render_messages(engine, request.messages, request.tools, media=MediaAccess(media_limits))
            tokens = rendered.token_ids
        else:
            served = registry.get(name)
            current().model = served.id
            tokens = await served.engine.tokenize(request.prompt or "", request.special_tokens)
        return TokenizeResponse(count=len(tokens), max_model_len=served.engine.max_model_len, tokens=tokens)

    @router.post("/detokenize")
    async def detokenize(request: DetokenizeRequest) -> DetokenizeResponse:
        served, engine = registry.generator(model_name(registry, request.model))
        current().model = served.id
        try:
            text = await engine.decode(request.tokens)
        except EngineInputError as exc:  # ids outside the vocabulary
            raise bad_request(str(exc), "tokens") from exc
        return DetokenizeResponse(prompt=text)

    return router
