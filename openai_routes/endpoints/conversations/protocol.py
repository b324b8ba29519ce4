"""The Conversations API's requests and objects (``/v1/conversations``).

Reference: https://platform.openai.com/docs/api-reference/conversations (the SDK's ``types/conversations``). Items
are the Responses API's input items (``protocol/items.py``), at most 20 per write as OpenAI allows.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

from openai_routes.protocol.common import Metadata, OpenAIModel
from openai_routes.protocol.items import InputItem, typed_item

MAX_ITEMS_PER_WRITE = 20


def typed_items(value: Any) -> Any:
    return [typed_item(item) for item in value] if isinstance(value, list) else value


class ConversationCreateRequest(OpenAIModel):
    items: list[InputItem] = Field(default_factory=list, max_length=MAX_ITEMS_PER_WRITE)
    metadata: Metadata = Field(default_factory=dict)

    _typed = field_validator("items", mode="before")(typed_items)


class ConversationUpdateRequest(OpenAIModel):
    metadata: Metadata


class ItemCreateRequest(OpenAIModel):
    items: list[InputItem] = Field(min_length=1, max_length=MAX_ITEMS_PER_WRITE)

    _typed = field_validator("items", mode="before")(typed_items)


class Conversation(BaseModel):
    id: str
    object: Literal["conversation"] = "conversation"
    created_at: int
    metadata: dict[str, str]


class ConversationDeleted(BaseModel):
    id: str
    object: Literal["conversation.deleted"] = "conversation.deleted"
    deleted: bool = True
