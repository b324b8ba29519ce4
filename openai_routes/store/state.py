"""``StateStore``: the one database of the state APIs, opened once: stored responses, conversations, stored chat
completions, files, batches, and the purger that deletes what expired.

The database is SQLite (aiosqlite, WAL) for one replica or PostgreSQL (asyncpg) shared by several; its schema comes
only from the Alembic migrations in ``migrations/``, brought to their head by ``open``.
"""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from openai_routes.core.limits import MAX_BATCH_LINES, MAX_FILE_BYTES
from openai_routes.store.batch_lines import BatchLines
from openai_routes.store.batches import BatchStore
from openai_routes.store.chat_completions import CompletionStore
from openai_routes.store.conversations import ConversationStore
from openai_routes.store.database import create_engine, migrate
from openai_routes.store.files import FileStore
from openai_routes.store.pages import now as current_second
from openai_routes.store.responses import ResponseStore

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StoreLimits:
    ttl: int  # seconds a record is kept after its last change
    max_bytes: int  # the largest record (a response with its input items, a completion with its messages, a write)
    max_conversation_items: int = 10_000
    max_file_bytes: int = MAX_FILE_BYTES  # the largest file
    max_batch_lines: int = MAX_BATCH_LINES  # the most lines of a "batch" file


class StateStore:
    def __init__(self, engine: AsyncEngine, limits: StoreLimits) -> None:
        self.engine = engine
        self.responses = ResponseStore(engine, ttl=limits.ttl, max_response_bytes=limits.max_bytes)
        self.conversations = ConversationStore(
            engine, ttl=limits.ttl, max_bytes=limits.max_bytes, max_items=limits.max_conversation_items
        )
        self.completions = CompletionStore(engine, ttl=limits.ttl, max_bytes=limits.max_bytes)
        self.batches = BatchStore(engine, ttl=limits.ttl)
        self.batch_lines = BatchLines(engine)
        self.files = FileStore(
            engine, ttl=limits.ttl, max_file_bytes=limits.max_file_bytes, max_batch_lines=limits.max_batch_lines
        )

    @classmethod
    async def open(cls, url: str, limits: StoreLimits) -> StateStore:
        """Connect and bring the schema to the migrations' head (a no-op when it is there already)."""
        engine = create_engine(url)
        try:
            await migrate(engine)
        except BaseException:
            await engine.dispose()
            raise
        logger.info("store open (%s)", engine.dialect.name)  # never the URL: it holds a password
        return cls(engine, limits)

    async def close(self) -> None:
        await self.engine.dispose()

    async def purge_expired(self, now: float | None = None) -> int:
        """Delete what expired at ``now`` (default: the current time), in every table; the number of records deleted."""
        cutoff = current_second() if now is None else math.floor(now)
        purged = await self.responses.purge_expired(cutoff)
        purged += await self.conversations.purge_expired(cutoff)
        purged += await self.batches.purge_expired(cutoff)
        purged += await self.files.purge_expired(cutoff)
        return purged + await self.completions.purge_expired(cutoff)

    async def run_purger(self, every: float) -> None:
        """Purge every ``every`` seconds until cancelled; a failed purge is logged and retried next time."""
        while True:
            try:
                purged = await self.purge_expired()
            except Exception:
                logger.exception("purging expired records failed")
            else:
                logger.info("purged %d expired records", purged)
            await asyncio.sleep(every)
