"""The durable store of the state APIs: stored responses (their input items and chains), conversations and their
items, stored chat completions, files, batches and their lines.

``StateStore`` (``state.py``) opens the one database and holds a store per API (``responses.py``,
``conversations.py``, ``chat_completions.py``, ``files.py``, ``batches.py`` and ``batch_lines.py``); every query is
scoped to the caller's key and to unexpired records.
The database is SQLite (aiosqlite, WAL) for one replica or PostgreSQL (asyncpg) shared by several; its schema comes
only from the Alembic migrations in ``migrations/``, run by ``StateStore.open``.
"""

from openai_routes.store.chat_completions import CompletionRecord, CompletionStore
from openai_routes.store.conversations import ConversationRecord, ConversationStore
from openai_routes.store.files import FileRecord, FileRefused, FileStore
from openai_routes.store.records import ResponseRecord, StoreFullError
from openai_routes.store.responses import ResponseStore
from openai_routes.store.state import StateStore, StoreLimits

__all__ = [
    "CompletionRecord",
    "CompletionStore",
    "ConversationRecord",
    "ConversationStore",
    "FileRecord",
    "FileRefused",
    "FileStore",
    "ResponseRecord",
    "ResponseStore",
    "StateStore",
    "StoreFullError",
    "StoreLimits",
]
