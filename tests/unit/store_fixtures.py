"""Helpers for the store's tests: records to save, a real PostgreSQL server (pgserver), and the schema check."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection

from openai_routes.store import ResponseRecord, StateStore
from openai_routes.store.database import MIGRATIONS
from openai_routes.store.tables import Base

ROOT = Path(__file__).resolve().parents[2]
TTL = 3600


def head_revision() -> str:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    head = ScriptDirectory.from_config(config).get_current_head()
    assert head is not None
    return head


HEAD = head_revision()  # the migrations' last revision, where every open leaves the database


def make_record(
    response_id: str,
    *,
    owner: str = "alice",
    status: str = "completed",
    previous: str | None = None,
    created_at: int | None = None,
    expires_at: int = 0,
) -> ResponseRecord:
    response = {"id": response_id, "object": "response", "status": status, "output": [{"type": "message"}]}
    return ResponseRecord(
        id=response_id,
        owner=owner,
        created_at=int(time.time()) if created_at is None else created_at,
        status=status,
        response=response,
        input_items=[{"id": f"msg_{response_id}", "type": "message", "text": "hi"}],
        previous_response_id=previous,
        expires_at=expires_at,
    )


async def schema_differences(store: StateStore) -> list[Any]:
    """What autogenerate would change to make the migrated database match the models (nothing, when they agree)."""

    def compare(connection: Connection) -> list[Any]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, Base.metadata))

    async with store.engine.connect() as connection:
        return await connection.run_sync(compare)


class Postgres:
    """One pgserver PostgreSQL for the session; each test takes a database of its own."""

    def __init__(self, directory: Path) -> None:
        from pgserver.postgres_server import get_server  # pgserver.get_server, typed

        try:  # as root, pgserver runs PostgreSQL as a system user of its own ("pgserver"), which it creates
            self.server = get_server(str(directory), cleanup_mode="stop")
        except subprocess.CalledProcessError as exc:  # initdb or pg_ctl: say why, not just the exit status
            raise RuntimeError(f"pgserver could not start PostgreSQL: {exc.stderr or exc.stdout}") from exc
        self.count = 0

    def new_database(self) -> str:
        self.count += 1
        name = f"store_{self.count}"
        self.server.psql(f"CREATE DATABASE {name};")
        uri: str = self.server.get_uri(name)
        return uri
