"""The store's database: its URL (which async driver), its engine, and its schema brought to the migrations' head.

- ``postgresql://`` and ``postgres://`` URLs use asyncpg (libpq's ``sslmode`` becomes asyncpg's ``ssl``);
  ``sqlite://`` URLs use aiosqlite, with the file's directory created on open.
- SQLite runs in WAL mode with a busy timeout, so two processes can share the file, and with foreign keys on.
- Migrations run at every open, in one transaction: on PostgreSQL under an advisory lock, on SQLite under the
  write lock (``BEGIN IMMEDIATE``), so replicas or workers starting together upgrade once and the rest wait.
  At the head, an open changes nothing. The lock is also what keeps two opens in one process apart: Alembic's
  ``context`` is process-global, and two upgrades interleaving on one event loop break each other.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from openai_routes.store.records import dumps

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 30_000
# pg_advisory_xact_lock's key: any fixed 32-bit number; derived from a name so it says whose lock it is.
MIGRATION_LOCK = zlib.crc32(b"bento-oai responses store migrations")


def async_url(url: str) -> URL:
    """The SQLAlchemy URL with the async driver for ``url`` (ValueError for anything else)."""
    parsed = make_url(url.replace("postgres://", "postgresql://", 1) if url.startswith("postgres://") else url)
    backend, _, driver = parsed.drivername.partition("+")
    if backend == "postgresql" and driver in ("", "asyncpg"):
        query = dict(parsed.query)
        if "sslmode" in query:
            query["ssl"] = query.pop("sslmode")
        return parsed.set(drivername="postgresql+asyncpg", query=query)
    if backend == "sqlite" and driver in ("", "aiosqlite"):
        return parsed.set(drivername="sqlite+aiosqlite")
    raise ValueError(
        f"unsupported store URL scheme {parsed.drivername!r}: use postgresql:// (asyncpg) or sqlite:/// (aiosqlite)"
    )


def create_engine(url: str) -> AsyncEngine:
    target = async_url(url)
    if target.get_backend_name() == "sqlite":
        if target.database and target.database != ":memory:" and not target.database.startswith("file:"):
            Path(target.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(target, json_serializer=dumps)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    return create_async_engine(target, json_serializer=dumps, pool_pre_ping=True)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA journal_mode = WAL")
    cursor.execute("PRAGMA foreign_keys = ON")
    cursor.close()


async def migrate(engine: AsyncEngine) -> None:
    """Bring the schema to the migrations' head, once across processes (see the module docstring)."""
    async with engine.begin() as connection:
        await _lock_for_migrations(connection)
        await connection.run_sync(_upgrade)


async def _lock_for_migrations(connection: AsyncConnection) -> None:
    if connection.dialect.name == "postgresql":
        await connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
    elif connection.dialect.name == "sqlite":
        # pysqlite has not begun a transaction yet (it does so before DML only): take the write lock now.
        await connection.exec_driver_sql("BEGIN IMMEDIATE")


def _upgrade(connection: Connection) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS).replace("%", "%%"))
    config.attributes["connection"] = connection
    command.upgrade(config, "head")
