"""``ResponseStore``: saving, reading, chaining and expiring stored responses.

Every query is scoped: by ``owner`` (the digest of the caller's API key, so another key's response does not exist
for the caller) and by ``expires_at > now`` (an expired record is gone even before the purger deletes it). Writes
go through the async drivers, so they never block the event loop.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, Row, and_, delete, literal, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from openai_routes.store.pages import now
from openai_routes.store.records import UNFINISHED, ResponseRecord, check_size
from openai_routes.store.tables import RESPONSES

MAX_CHAIN = 10_000  # links followed at most: a bound on a (corrupt) cycle, far beyond any real conversation
COLUMNS = RESPONSES.c


class ResponseStore:
    def __init__(self, engine: AsyncEngine, *, ttl: int, max_response_bytes: int) -> None:
        self.engine = engine
        self.ttl = ttl
        self.max_response_bytes = max_response_bytes

    def _values(self, record: ResponseRecord) -> dict[str, Any]:
        check_size(record, self.max_response_bytes)
        expires_at = record.expires_at or (record.created_at or now()) + self.ttl
        values = {**vars(record), "expires_at": expires_at, "updated_at": now()}
        return values

    async def save(self, record: ResponseRecord) -> None:
        """Insert the record, or replace the one with its id (never another owner's)."""
        values = self._values(record)
        dialect = postgresql if self.engine.dialect.name == "postgresql" else sqlite
        insert = dialect.insert(RESPONSES).values(values)
        replace = {name: insert.excluded[name] for name in values if name != "id"}
        statement = insert.on_conflict_do_update(
            index_elements=[COLUMNS.id], set_=replace, where=COLUMNS.owner == insert.excluded.owner
        )
        async with self.engine.begin() as connection:
            await connection.execute(statement)

    async def update(self, record: ResponseRecord, *, unless: tuple[str, ...] = ()) -> bool:
        """Replace the stored record unless its stored status is in ``unless``, atomically; True if written."""
        values = self._values(record)
        del values["id"], values["owner"]
        condition = _visible(record.id, record.owner, now())
        if unless:
            condition = and_(condition, COLUMNS.status.not_in(unless))
        async with self.engine.begin() as connection:
            result = await connection.execute(update(RESPONSES).where(condition).values(values))
        return result.rowcount > 0

    async def get(self, response_id: str, owner: str) -> ResponseRecord | None:
        """The record, or None: unknown, another owner's, or expired."""
        async with self.engine.connect() as connection:
            result = await connection.execute(select(RESPONSES).where(_visible(response_id, owner, now())))
            row = result.first()
        return None if row is None else _record(row)

    async def delete(self, response_id: str, owner: str) -> bool:
        async with self.engine.begin() as connection:
            result = await connection.execute(delete(RESPONSES).where(_visible(response_id, owner, now())))
        return result.rowcount > 0

    async def chain(self, response_id: str, owner: str) -> list[ResponseRecord] | None:
        """The response and its ancestors through ``previous_response_id``, oldest first; None if a link is missing
        (unknown, another owner's, expired). One recursive query, whatever the chain's length."""
        moment = now()
        first = select(*COLUMNS, literal(0).label("depth")).where(_visible(response_id, owner, moment))
        links = first.cte("links", recursive=True)
        parent = RESPONSES.alias("parent")
        step = (
            select(*parent.c, (links.c.depth + 1).label("depth"))
            .join(links, parent.c.id == links.c.previous_response_id)
            .where(parent.c.owner == owner, parent.c.expires_at > moment, links.c.depth < MAX_CHAIN)
        )
        links = links.union_all(step)
        async with self.engine.connect() as connection:
            rows = (await connection.execute(select(links).order_by(links.c.depth.desc()))).all()
        if not rows or rows[0].previous_response_id is not None:
            return None  # the start is missing, or the oldest found points at a record that is not there
        return [_record(row) for row in rows]

    async def unfinished(self, owner: str | None = None) -> list[ResponseRecord]:
        """Records still ``queued`` or ``in_progress`` (of one owner, or of all when None)."""
        condition = and_(COLUMNS.status.in_(UNFINISHED), COLUMNS.expires_at > now())
        if owner is not None:
            condition = and_(condition, COLUMNS.owner == owner)
        async with self.engine.connect() as connection:
            rows = (await connection.execute(select(RESPONSES).where(condition).order_by(COLUMNS.created_at))).all()
        return [_record(row) for row in rows]

    async def purge_expired(self, cutoff: int) -> int:
        """Delete the records expired at ``cutoff``; the number deleted."""
        async with self.engine.begin() as connection:
            result = await connection.execute(delete(RESPONSES).where(COLUMNS.expires_at <= cutoff))
        return result.rowcount


def _visible(response_id: str, owner: str, now: int) -> ColumnElement[bool]:
    return and_(COLUMNS.id == response_id, COLUMNS.owner == owner, COLUMNS.expires_at > now)


def _record(row: Row[Any]) -> ResponseRecord:
    data = row._mapping
    return ResponseRecord(
        id=data["id"],
        owner=data["owner"],
        created_at=data["created_at"],
        status=data["status"],
        response=data["response"],
        input_items=data["input_items"],
        previous_response_id=data["previous_response_id"],
        expires_at=data["expires_at"],
    )
