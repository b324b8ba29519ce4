"""The Conversations API (https://platform.openai.com/docs/api-reference/conversations):

- ``POST /v1/conversations`` (with its first items and metadata), ``GET``/``POST``/``DELETE /v1/conversations/{id}``
- ``POST``/``GET /v1/conversations/{id}/items`` (add up to 20 at once; list with ``after``, ``limit``, ``order``)
- ``GET``/``DELETE /v1/conversations/{id}/items/{item_id}`` (a delete answers the conversation, as OpenAI does)

A response created with ``conversation`` reads its items as context and appends its input and output to it
(``endpoints/responses``). Everything is scoped to the caller's key: another key's conversation is a 404.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request

from openai_routes.core.errors import APIError, bad_request
from openai_routes.endpoints.conversation_state import add_items, conversation_not_found
from openai_routes.endpoints.conversations.protocol import (
    Conversation,
    ConversationCreateRequest,
    ConversationDeleted,
    ConversationUpdateRequest,
    ItemCreateRequest,
)
from openai_routes.endpoints.lists import NewestFirst
from openai_routes.pipeline.input_items import new_id, stored_item
from openai_routes.protocol.common import ObjectList
from openai_routes.server.auth import key_owner
from openai_routes.server.json_body import StrictJSONRoute
from openai_routes.store import ConversationRecord, StoreFullError
from openai_routes.store.book import ResponseBook
from openai_routes.store.conversations import UnknownCursor


def item_not_found(item_id: str) -> APIError:
    return APIError(404, f"Item with id '{item_id}' not found.", code="not_found", param="item_id")


def create_router(book: ResponseBook) -> APIRouter:
    router = APIRouter(route_class=StrictJSONRoute)

    async def find(conversation_id: str, owner: str) -> ConversationRecord:
        record = await book.state.conversations.get(conversation_id, owner)
        if record is None:
            raise conversation_not_found(conversation_id)
        return record

    @router.post("/conversations")
    async def create_conversation(request: ConversationCreateRequest, http: Request) -> Conversation:
        record = ConversationRecord(new_id("conv"), key_owner(http.scope), int(time.time()), request.metadata)
        try:
            await book.state.conversations.create(record, [stored_item(item) for item in request.items])
        except StoreFullError as exc:
            raise bad_request(str(exc), param="items", code="conversation_too_large") from None
        return Conversation(id=record.id, created_at=record.created_at, metadata=record.metadata)

    @router.get("/conversations/{conversation_id}")
    async def get_conversation(conversation_id: str, http: Request) -> Conversation:
        record = await find(conversation_id, key_owner(http.scope))
        return Conversation(id=record.id, created_at=record.created_at, metadata=record.metadata)

    @router.post("/conversations/{conversation_id}")
    async def update_conversation(
        conversation_id: str, request: ConversationUpdateRequest, http: Request
    ) -> Conversation:
        owner = key_owner(http.scope)
        if not await book.state.conversations.update_metadata(conversation_id, owner, request.metadata):
            raise conversation_not_found(conversation_id)
        return await get_conversation(conversation_id, http)

    @router.delete("/conversations/{conversation_id}")
    async def delete_conversation(conversation_id: str, http: Request) -> ConversationDeleted:
        if not await book.state.conversations.delete(conversation_id, key_owner(http.scope)):
            raise conversation_not_found(conversation_id)
        return ConversationDeleted(id=conversation_id)

    @router.post("/conversations/{conversation_id}/items")
    async def create_items(conversation_id: str, request: ItemCreateRequest, http: Request) -> ObjectList:
        items = [stored_item(item) for item in request.items]
        await add_items(book.state, conversation_id, key_owner(http.scope), items, param="items")
        return ObjectList.of(items, has_more=False)

    @router.get("/conversations/{conversation_id}/items")
    async def list_items(
        conversation_id: str,
        http: Request,
        query: NewestFirst,
    ) -> ObjectList:
        try:
            found = await book.state.conversations.items(conversation_id, key_owner(http.scope), query)
        except UnknownCursor:
            raise bad_request(f"No item with id '{query.after}' in this conversation.", param="after") from None
        if found is None:
            raise conversation_not_found(conversation_id)
        return ObjectList.of(*found)

    @router.get("/conversations/{conversation_id}/items/{item_id}", response_model=None)
    async def get_item(conversation_id: str, item_id: str, http: Request) -> dict[str, Any]:
        owner = key_owner(http.scope)
        await find(conversation_id, owner)
        item = await book.state.conversations.item(conversation_id, item_id, owner)
        if item is None:
            raise item_not_found(item_id)
        return item

    @router.delete("/conversations/{conversation_id}/items/{item_id}")
    async def delete_item(conversation_id: str, item_id: str, http: Request) -> Conversation:
        record = await find(conversation_id, key_owner(http.scope))
        if not await book.state.conversations.delete_item(conversation_id, item_id, record.owner):
            raise item_not_found(item_id)
        return Conversation(id=record.id, created_at=record.created_at, metadata=record.metadata)

    return router
