"""The store's schema as SQLAlchemy models: ``responses``, ``conversations`` and their ``conversation_items``,
``chat_completions``, ``files`` and their ``file_chunks``.

The database gets this schema only through the migrations (``migrations/versions``); a test checks the two agree.
JSON columns are ``jsonb`` on PostgreSQL and JSON text on SQLite.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, ForeignKey, Integer, LargeBinary, String, Table
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

JSONDocument = JSON().with_variant(JSONB(), "postgresql")


class Base(DeclarativeBase):
    pass


class ResponseRow(Base):
    """One stored response. ``owner`` scopes every query (key-scoped privacy), ``expires_at`` every read."""

    __tablename__ = "responses"

    id: Mapped[str] = mapped_column(String, primary_key=True)
    owner: Mapped[str] = mapped_column(String, index=True)
    created_at: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[int] = mapped_column(BigInteger, index=True)
    status: Mapped[str] = mapped_column(String)
    previous_response_id: Mapped[str | None] = mapped_column(String)
    response: Mapped[dict[str, Any]] = mapped_column(JSONDocument)
    input_items: Mapped[list[dict[str, Any]]] = mapped_column(JSONDocument)


class ConversationRow(Base):
    """One conversation (``/v1/conversations``): its metadata; its items are ``conversation_items`` rows."""

    __tablename__ = "conversations"

    id: Mapped[str] = mapped_column(String, primary_key=True)
    owner: Mapped[str] = mapped_column(String, index=True)
    created_at: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[int] = mapped_column(BigInteger, index=True)
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSONDocument)


class ConversationItemRow(Base):
    """One item of a conversation. ``seq`` is the order items were added in (the pagination cursor's key)."""

    __tablename__ = "conversation_items"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String, unique=True)
    conversation_id: Mapped[str] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"), index=True)
    owner: Mapped[str] = mapped_column(String)
    created_at: Mapped[int] = mapped_column(BigInteger)
    item: Mapped[dict[str, Any]] = mapped_column(JSONDocument)


class ChatCompletionRow(Base):
    """One chat completion made with ``store: true``: the completion and the request's messages."""

    __tablename__ = "chat_completions"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String, unique=True)
    owner: Mapped[str] = mapped_column(String, index=True)
    model: Mapped[str] = mapped_column(String)
    created_at: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[int] = mapped_column(BigInteger, index=True)
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSONDocument)
    completion: Mapped[dict[str, Any]] = mapped_column(JSONDocument)
    messages: Mapped[list[dict[str, Any]]] = mapped_column(JSONDocument)


class FileRow(Base):
    """One uploaded file (``/v1/files``) or one a batch wrote; its bytes are ``file_chunks`` rows. ``status`` is
    ``uploading`` while its chunks are written (invisible), ``processed`` once whole."""

    __tablename__ = "files"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String, unique=True)
    owner: Mapped[str] = mapped_column(String, index=True)
    purpose: Mapped[str] = mapped_column(String)
    filename: Mapped[str] = mapped_column(String)
    bytes: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[int] = mapped_column(BigInteger, index=True)
    status: Mapped[str] = mapped_column(String)


class FileChunkRow(Base):
    """One piece of a file's bytes (at most ``store.files.CHUNK_BYTES``), ``index`` counting from 0."""

    __tablename__ = "file_chunks"

    file_id: Mapped[str] = mapped_column(ForeignKey("files.id", ondelete="CASCADE"), primary_key=True)
    index: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    data: Mapped[bytes] = mapped_column(LargeBinary)


def table(row: type[Base]) -> Table:
    found = row.__table__
    assert isinstance(found, Table)
    return found


RESPONSES = table(ResponseRow)
CONVERSATIONS = table(ConversationRow)
CONVERSATION_ITEMS = table(ConversationItemRow)
CHAT_COMPLETIONS = table(ChatCompletionRow)


class BatchRow(Base):
    """One batch (``/v1/batches``). ``batch`` is its wire object but for the live counts; ``deadline`` is the end of
    its completion window; ``worker`` and ``lease_until`` say which replica validates or finalizes it."""

    __tablename__ = "batches"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String, unique=True)
    owner: Mapped[str] = mapped_column(String, index=True)
    created_at: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[int] = mapped_column(BigInteger, index=True)
    status: Mapped[str] = mapped_column(String, index=True)
    deadline: Mapped[int] = mapped_column(BigInteger)
    worker: Mapped[str | None] = mapped_column(String)
    lease_until: Mapped[int] = mapped_column(BigInteger)
    batch: Mapped[dict[str, Any]] = mapped_column(JSONDocument)


class BatchLineRow(Base):
    """One request line of a batch: ``pending``, ``running`` (claimed by ``worker`` until ``lease_until``) or
    ``done`` (its output or error line in ``result``, ``failed`` for the error file)."""

    __tablename__ = "batch_lines"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    batch_id: Mapped[str] = mapped_column(ForeignKey("batches.id", ondelete="CASCADE"), index=True)
    line: Mapped[int] = mapped_column(Integer)
    custom_id: Mapped[str] = mapped_column(String)
    model: Mapped[str | None] = mapped_column(String)
    body: Mapped[dict[str, Any]] = mapped_column(JSONDocument)
    status: Mapped[str] = mapped_column(String, index=True)
    worker: Mapped[str | None] = mapped_column(String)
    lease_until: Mapped[int] = mapped_column(BigInteger)
    attempts: Mapped[int] = mapped_column(Integer)
    failed: Mapped[bool] = mapped_column(Boolean)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONDocument)


BATCHES = table(BatchRow)
BATCH_LINES = table(BatchLineRow)
FILES = table(FileRow)
FILE_CHUNKS = table(FileChunkRow)
