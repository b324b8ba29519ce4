"""The store's schema as SQLAlchemy models: one table, ``responses``.

The database gets this schema only through the migrations (``migrations/versions``); a test checks the two agree.
JSON columns are ``jsonb`` on PostgreSQL and JSON text on SQLite.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, String, Table
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


def responses_table() -> Table:
    table = ResponseRow.__table__
    assert isinstance(table, Table)
    return table


RESPONSES = responses_table()
