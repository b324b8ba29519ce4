"""``ConversationStore``: conversations (``/v1/conversations``) and their items, kept in the order they were added.

As for stored responses, every query is scoped by owner (another key's conversation does not exist for the caller)
and by ``expires_at > now``; a conversation's items live and die with it (deleted with it, cascading). A
conversation is kept ``ttl`` seconds after its last change (created, items added, metadata updated). Caps: one write
of items takes at most ``max_bytes`` of JSON, and a conversation holds at most ``max_items`` items.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, and_, delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from openai_routes.store.pages import PageQuery, now, page
from openai_routes.store.records import StoreFullError, dumps
from openai_routes.store.tables import CONVERSATION_ITEMS, CONVERSATIONS

CONVERSATION = CONVERSATIONS.c
ITEM = CONVERSATION_ITEMS.c


@dataclass
class ConversationRecord:
    id: str  # "conv_..."
    owner: str
    created_at: int
    metadata: dict[str, str] = field(default_factory=dict)


class UnknownCursor(LookupError):
    """``after`` names no item of the list (the route answers 400 on ``after``)."""


class ConversationStore:
    def __init__(self, engine: AsyncEngine, *, ttl: int, max_bytes: int, max_items: int) -> None:
        self.engine = engine
        self.ttl = ttl
        self.max_bytes = max_bytes
        self.max_items = max_items

    async def create(self, record: ConversationRecord, items: list[dict[str, Any]]) -> None:
        """Insert the conversation and its first items, at once."""
        self._check(items, 0)
        moment = now()
        async with self.engine.begin() as connection:
            values = {"id": record.id, "owner": record.owner, "created_at": record.created_at}
            await connection.execute(
                insert(CONVERSATIONS).values(
                    **values, updated_at=moment, expires_at=moment + self.ttl, metadata=record.metadata
                )
            )
            await self._insert_items(connection, record, items)

    async def get(self, conversation_id: str, owner: str) -> ConversationRecord | None:
        async with self.engine.connect() as connection:
            row = (await connection.execute(select(CONVERSATIONS).where(_visible(conversation_id, owner)))).first()
        return None if row is None else ConversationRecord(row.id, row.owner, row.created_at, row.metadata)

    async def update_metadata(self, conversation_id: str, owner: str, metadata: dict[str, str]) -> bool:
        moment = now()
        values = {"metadata": metadata, "updated_at": moment, "expires_at": moment + self.ttl}
        async with self.engine.begin() as connection:
            result = await connection.execute(
                update(CONVERSATIONS).where(_visible(conversation_id, owner)).values(values)
            )
        return result.rowcount > 0

    async def delete(self, conversation_id: str, owner: str) -> bool:
        async with self.engine.begin() as connection:
            result = await connection.execute(delete(CONVERSATIONS).where(_visible(conversation_id, owner)))
        return result.rowcount > 0

    async def add_items(self, conversation_id: str, owner: str, items: list[dict[str, Any]]) -> bool:
        """Append ``items`` (each with its ``id``); False when the conversation is not there."""
        async with self.engine.begin() as connection:
            touched = await connection.execute(
                update(CONVERSATIONS)
                .where(_visible(conversation_id, owner))
                .values(updated_at=now(), expires_at=now() + self.ttl)
            )
            if not touched.rowcount:
                return False
            held = (
                await connection.execute(
                    select(func.count()).select_from(CONVERSATION_ITEMS).where(ITEM.conversation_id == conversation_id)
                )
            ).scalar_one()
            self._check(items, held)
            await self._insert_items(connection, ConversationRecord(conversation_id, owner, now()), items)
        return True

    async def items(
        self, conversation_id: str, owner: str, query: PageQuery
    ) -> tuple[list[dict[str, Any]], bool] | None:
        """A page of the conversation's items; None when the conversation is not there."""
        async with self.engine.connect() as connection:
            if not await _exists(connection, conversation_id, owner):
                return None
            found = await page(connection, CONVERSATION_ITEMS, ITEM.conversation_id == conversation_id, query)
        if found is None:
            raise UnknownCursor(query.after)
        rows, more = found
        return [row.item for row in rows], more

    async def all_items(self, conversation_id: str, owner: str) -> list[dict[str, Any]] | None:
        """Every item, oldest first (a response's context); None when the conversation is not there."""
        async with self.engine.connect() as connection:
            if not await _exists(connection, conversation_id, owner):
                return None
            rows = await connection.execute(
                select(ITEM.item).where(ITEM.conversation_id == conversation_id).order_by(ITEM.seq)
            )
            return [item for (item,) in rows]

    async def item(self, conversation_id: str, item_id: str, owner: str) -> dict[str, Any] | None:
        async with self.engine.connect() as connection:
            if not await _exists(connection, conversation_id, owner):
                return None
            return (await connection.execute(select(ITEM.item).where(_item(conversation_id, item_id)))).scalar()

    async def delete_item(self, conversation_id: str, item_id: str, owner: str) -> bool:
        async with self.engine.begin() as connection:
            if not await _exists(connection, conversation_id, owner):
                return False
            result = await connection.execute(delete(CONVERSATION_ITEMS).where(_item(conversation_id, item_id)))
        return result.rowcount > 0

    async def purge_expired(self, cutoff: int) -> int:
        async with self.engine.begin() as connection:
            result = await connection.execute(delete(CONVERSATIONS).where(CONVERSATION.expires_at <= cutoff))
        return result.rowcount

    def _check(self, items: list[dict[str, Any]], held: int) -> None:
        size = len(dumps(items).encode())
        if size > self.max_bytes:
            raise StoreFullError(
                f"The items take {size} bytes, more than the {self.max_bytes} bytes one write may take."
            )
        if held + len(items) > self.max_items:
            raise StoreFullError(f"A conversation holds at most {self.max_items} items; this one has {held}.")

    async def _insert_items(
        self, connection: AsyncConnection, record: ConversationRecord, items: list[dict[str, Any]]
    ) -> None:
        if items:
            rows = [
                {"id": item["id"], "conversation_id": record.id, "owner": record.owner, "created_at": now(),
                 "item": item}
                for item in items
            ]  # fmt: skip
            await connection.execute(insert(CONVERSATION_ITEMS), rows)


def _visible(conversation_id: str, owner: str) -> ColumnElement[bool]:
    return and_(CONVERSATION.id == conversation_id, CONVERSATION.owner == owner, CONVERSATION.expires_at > now())


def _item(conversation_id: str, item_id: str) -> ColumnElement[bool]:
    return and_(ITEM.conversation_id == conversation_id, ITEM.id == item_id)


async def _exists(connection: AsyncConnection, conversation_id: str, owner: str) -> bool:
    return (
        await connection.execute(select(CONVERSATION.id).where(_visible(conversation_id, owner)))
    ).first() is not None
