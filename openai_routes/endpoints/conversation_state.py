"""A conversation's items as the Conversations and Responses endpoints both use them: read as a response's context,
appended when a response that names the conversation completes. Another key's conversation, or one that expired,
is not found (404), wherever it is named.
"""

from __future__ import annotations

import logging
from typing import Any

from openai_routes.core.errors import APIError, bad_request
from openai_routes.store import StateStore, StoreFullError

logger = logging.getLogger(__name__)


def conversation_not_found(conversation_id: str, param: str = "conversation_id") -> APIError:
    return APIError(404, f"Conversation with id '{conversation_id}' not found.", code="not_found", param=param)


async def conversation_items(state: StateStore, conversation_id: str, owner: str, param: str) -> list[dict[str, Any]]:
    """Every item of the conversation, oldest first (404 on ``param`` when it is not there)."""
    items = await state.conversations.all_items(conversation_id, owner)
    if items is None:
        raise conversation_not_found(conversation_id, param)
    return items


async def add_items(
    state: StateStore, conversation_id: str, owner: str, items: list[dict[str, Any]], param: str
) -> None:
    """Append ``items`` (404 on ``param`` when the conversation is not there, 400 past the store's caps)."""
    try:
        added = await state.conversations.add_items(conversation_id, owner, items)
    except StoreFullError as exc:
        raise bad_request(str(exc), param=param, code="conversation_too_large") from None
    if not added:
        raise conversation_not_found(conversation_id, param)
