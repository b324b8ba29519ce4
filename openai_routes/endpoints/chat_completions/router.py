"""``POST /v1/chat/completions``: render the conversation with the model's chat template, generate, and answer as
one ``chat.completion`` or as a stream of ``chat.completion.chunk`` events.

The request is prepared by the pipeline (``pipeline.prepare.prepare_chat``: limits, template, formats and tool
calls), run by ``pipeline.run.GenerationRun`` and answered in chat's wire shape (``wire.ChatWire``). With
``store: true`` the finished completion is kept (``stored.py``, which also serves the stored completions).
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from openai_routes.core.context import current
from openai_routes.core.limits import Limits, MediaLimits
from openai_routes.core.registry import ModelRegistry
from openai_routes.endpoints.answer import answer
from openai_routes.endpoints.chat_completions.stored import keeper
from openai_routes.endpoints.chat_completions.wire import ChatWire
from openai_routes.pipeline.images import MediaAccess
from openai_routes.pipeline.prepare import prepare_chat
from openai_routes.pipeline.run import GenerationRun, RunSettings
from openai_routes.protocol.chat import ChatCompletion, ChatCompletionRequest
from openai_routes.server.auth import key_owner
from openai_routes.server.json_body import StrictJSONRoute
from openai_routes.store.book import ResponseBook


def create_router(
    registry: ModelRegistry,
    limits: Limits,
    runs: RunSettings,
    book: ResponseBook,
    media: MediaLimits | None = None,
) -> APIRouter:
    router = APIRouter(route_class=StrictJSONRoute)
    media_limits = media or MediaLimits()

    @router.post("/chat/completions", response_model=None)
    async def create_chat_completion(request: ChatCompletionRequest, http: Request) -> ChatCompletion | Response:
        served, engine = registry.generator(request.model)
        current().model = served.id
        prepared = await prepare_chat(request, engine, limits, media=MediaAccess(media_limits))
        id = ChatWire.new_id()
        run = GenerationRun(engine, served.id, [prepared.input], prepared.reading, id, runs)
        wire = ChatWire(request, run, id, keeper(book, request, key_owner(http.scope)))
        return await answer(run, wire, request.stream)

    return router
