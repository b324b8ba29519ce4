"""The durable store of the Responses API: stored responses, their input items and their chains.

``ResponseStore`` (``responses.py``) is the whole interface the routes use; ``ResponseRecord`` is what it keeps. The
database is SQLite (aiosqlite, WAL) for one replica or PostgreSQL (asyncpg) shared by several; its schema comes
only from the Alembic migrations in ``migrations/``, run by ``ResponseStore.open``.
"""

from openai_routes.store.records import ResponseRecord, StoreFullError
from openai_routes.store.responses import ResponseStore

__all__ = ["ResponseRecord", "ResponseStore", "StoreFullError"]
