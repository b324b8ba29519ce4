"""Stored chat completions (https://platform.openai.com/docs/api-reference/chat/list): a completion made with
``store: true`` is kept with the request's messages and its metadata.

- ``GET /v1/chat/completions`` (``model``, ``metadata[key]=value`` filters; ``after``, ``limit``, ``order``)
- ``GET``/``POST``/``DELETE /v1/chat/completions/{id}`` (the ``POST`` replaces the metadata)
- ``GET /v1/chat/completions/{id}/messages`` (the request's messages, each with an id; paged the same way)

Everything is scoped to the caller's key: another key's completion is a 404.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel

from openai_routes.core.errors import APIError, bad_request
from openai_routes.endpoints.chat_completions.wire import Keep
from openai_routes.endpoints.lists import OldestFirst, page_of
from openai_routes.protocol.chat import ChatCompletion, ChatCompletionRequest, ChatMessage
from openai_routes.protocol.common import Metadata, ObjectList, OpenAIModel
from openai_routes.server.auth import key_owner
from openai_routes.server.json_body import StrictJSONRoute
from openai_routes.store import CompletionRecord, StoreFullError
from openai_routes.store.book import ResponseBook
from openai_routes.store.chat_completions import UnknownCompletionCursor

METADATA_FILTER = re.compile(r"metadata\[(.+)\]")


class CompletionUpdateRequest(OpenAIModel):
    metadata: Metadata


class ChatCompletionDeleted(BaseModel):
    id: str
    object: Literal["chat.completion.deleted"] = "chat.completion.deleted"
    deleted: bool = True


def completion_not_found(completion_id: str) -> APIError:
    return APIError(
        404, f"Chat completion with id '{completion_id}' not found.", code="not_found", param="completion_id"
    )


def stored_message(message: ChatMessage, id: str) -> dict[str, Any]:
    """A request message as ``GET .../messages`` lists it (OpenAI's ``ChatCompletionStoreMessage``)."""
    body = message.model_dump(mode="json", exclude_none=True, exclude={"content"})
    content = message.text() if message.content is not None else None
    return {"id": id, **body, "content": content, "content_parts": None}


def keeper(book: ResponseBook, request: ChatCompletionRequest, owner: str) -> Keep | None:
    """The write of a finished completion when the request asked for ``store: true`` (else None)."""
    if not request.store:
        return None

    async def keep(completion: ChatCompletion) -> None:
        metadata = request.metadata or {}
        record = CompletionRecord(
            id=completion.id,
            owner=owner,
            model=completion.model,
            created_at=completion.created,
            completion={**completion.model_dump(mode="json"), "metadata": metadata},
            messages=[stored_message(message, f"{completion.id}-{i}") for i, message in enumerate(request.messages)],
            metadata=metadata,
        )
        try:
            await book.state.completions.save(record)
        except StoreFullError as exc:
            raise bad_request(str(exc), param="messages", code="completion_too_large") from None

    return keep


def create_router(book: ResponseBook) -> APIRouter:
    router = APIRouter(route_class=StrictJSONRoute)

    async def find(completion_id: str, owner: str) -> CompletionRecord:
        record = await book.state.completions.get(completion_id, owner)
        if record is None:
            raise completion_not_found(completion_id)
        return record

    @router.get("/chat/completions")
    async def list_completions(
        http: Request,
        query: OldestFirst,
        model: str | None = Query(default=None),
    ) -> ObjectList:
        metadata = {
            match[1]: value
            for key, value in http.query_params.multi_items()
            if (match := METADATA_FILTER.fullmatch(key))
        }
        try:
            records, more = await book.state.completions.list(
                key_owner(http.scope), query, model=model, metadata=metadata
            )
        except UnknownCompletionCursor:
            raise bad_request(f"No stored chat completion with id '{query.after}'.", param="after") from None
        return ObjectList.of([record.completion for record in records], more)

    @router.get("/chat/completions/{completion_id}", response_model=None)
    async def get_completion(completion_id: str, http: Request) -> dict[str, Any]:
        return (await find(completion_id, key_owner(http.scope))).completion

    @router.post("/chat/completions/{completion_id}", response_model=None)
    async def update_completion(completion_id: str, request: CompletionUpdateRequest, http: Request) -> dict[str, Any]:
        updated = await book.state.completions.update_metadata(completion_id, key_owner(http.scope), request.metadata)
        if updated is None:
            raise completion_not_found(completion_id)
        return updated.completion

    @router.delete("/chat/completions/{completion_id}")
    async def delete_completion(completion_id: str, http: Request) -> ChatCompletionDeleted:
        if not await book.state.completions.delete(completion_id, key_owner(http.scope)):
            raise completion_not_found(completion_id)
        return ChatCompletionDeleted(id=completion_id)

    @router.get("/chat/completions/{completion_id}/messages")
    async def list_messages(
        completion_id: str,
        http: Request,
        query: OldestFirst,
    ) -> ObjectList:
        messages = (await find(completion_id, key_owner(http.scope))).messages
        return page_of(messages, query, "chat completion")

    return router
