"""``CompletionStore``: chat completions made with ``store: true``, with the messages they answered.

Scoped as every store query is: by owner and by ``expires_at > now`` (kept ``ttl`` seconds after the last change).
One record (completion plus messages) takes at most ``max_bytes`` of JSON. Lists filter by model and by metadata
pairs in the database (``metadata ->> key``, on SQLite ``json_extract``) and page by insertion order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, and_, delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from openai_routes.store.pages import PageQuery, now, page
from openai_routes.store.records import StoreFullError, dumps
from openai_routes.store.tables import CHAT_COMPLETIONS

CHAT = CHAT_COMPLETIONS.c


@dataclass
class CompletionRecord:
    id: str  # "chatcmpl-..."
    owner: str
    model: str
    created_at: int
    completion: dict[str, Any]  # the ChatCompletion object, as GET returns it
    messages: list[dict[str, Any]]  # the request's messages, each with an "id"
    metadata: dict[str, str] = field(default_factory=dict)


class UnknownCompletionCursor(LookupError):
    """``after`` names no stored completion of the list."""


class CompletionStore:
    def __init__(self, engine: AsyncEngine, *, ttl: int, max_bytes: int) -> None:
        self.engine = engine
        self.ttl = ttl
        self.max_bytes = max_bytes

    async def save(self, record: CompletionRecord) -> None:
        size = len(dumps(record.completion).encode()) + len(dumps(record.messages).encode())
        if size > self.max_bytes:
            raise StoreFullError(
                f"The completion and its messages take {size} bytes, more than the {self.max_bytes} bytes one stored "
                "completion may take. Send less, or set 'store' to false."
            )
        moment = now()
        values = {**vars(record), "updated_at": moment, "expires_at": moment + self.ttl}
        async with self.engine.begin() as connection:
            await connection.execute(insert(CHAT_COMPLETIONS).values(values))

    async def get(self, completion_id: str, owner: str) -> CompletionRecord | None:
        async with self.engine.connect() as connection:
            row = (await connection.execute(select(CHAT_COMPLETIONS).where(_visible(completion_id, owner)))).first()
        return None if row is None else _record(row)

    async def list(
        self, owner: str, query: PageQuery, *, model: str | None = None, metadata: dict[str, str] | None = None
    ) -> tuple[list[CompletionRecord], bool]:
        condition = and_(CHAT.owner == owner, CHAT.expires_at > now())
        if model is not None:
            condition = and_(condition, CHAT.model == model)
        for key, value in (metadata or {}).items():
            condition = and_(condition, CHAT.metadata[key].as_string() == value)
        async with self.engine.connect() as connection:
            found = await page(connection, CHAT_COMPLETIONS, condition, query)
        if found is None:
            raise UnknownCompletionCursor(query.after)
        rows, more = found
        return [_record(row) for row in rows], more

    async def update_metadata(
        self, completion_id: str, owner: str, metadata: dict[str, str]
    ) -> CompletionRecord | None:
        """Replace the metadata (in the record and in its completion object); None when it is not there."""
        record = await self.get(completion_id, owner)
        if record is None:
            return None
        record.metadata = metadata
        record.completion = {**record.completion, "metadata": metadata}
        values = {
            "metadata": metadata,
            "completion": record.completion,
            "updated_at": now(),
            "expires_at": now() + self.ttl,
        }
        async with self.engine.begin() as connection:
            result = await connection.execute(
                update(CHAT_COMPLETIONS).where(_visible(completion_id, owner)).values(values)
            )
        return record if result.rowcount else None

    async def delete(self, completion_id: str, owner: str) -> bool:
        async with self.engine.begin() as connection:
            result = await connection.execute(delete(CHAT_COMPLETIONS).where(_visible(completion_id, owner)))
        return result.rowcount > 0

    async def purge_expired(self, cutoff: int) -> int:
        async with self.engine.begin() as connection:
            result = await connection.execute(delete(CHAT_COMPLETIONS).where(CHAT.expires_at <= cutoff))
        return result.rowcount


def _visible(completion_id: str, owner: str) -> ColumnElement[bool]:
    return and_(CHAT.id == completion_id, CHAT.owner == owner, CHAT.expires_at > now())


def _record(row: Any) -> CompletionRecord:
    return CompletionRecord(
        id=row.id,
        owner=row.owner,
        model=row.model,
        created_at=row.created_at,
        completion=row.completion,
        messages=row.messages,
        metadata=row.metadata,
    )
