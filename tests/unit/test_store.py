"""The Responses store on real SQLite files in tmp_path, no mocks: records, owners, expiry, the size cap, migrations,
WAL, a writer killed with SIGKILL. PostgreSQL (replicas on one real server) is in ``test_store_postgres.py``."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, insert

from openai_routes.store import (
    CompletionRecord,
    ConversationRecord,
    ResponseRecord,
    StateStore,
    StoreFullError,
    StoreLimits,
)
from openai_routes.store.database import MIGRATIONS, async_url
from openai_routes.store.records import dumps
from openai_routes.store.tables import RESPONSES
from tests.unit.store_fixtures import HEAD, ROOT, TTL, make_record, schema_differences


def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'data' / 'responses.db'}"  # a directory that does not exist yet


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[StateStore]:
    opened = await StateStore.open(sqlite_url(tmp_path), StoreLimits(TTL, 10_000))
    yield opened
    await opened.close()


async def test_save_then_get_returns_the_record_with_its_expiry(store: StateStore) -> None:
    record = make_record("resp_1")
    await store.responses.save(record)
    got = await store.responses.get("resp_1", "alice")
    assert got == ResponseRecord(**{**vars(record), "expires_at": record.created_at + TTL})


async def test_save_replaces_by_id_but_never_another_owners_record(store: StateStore) -> None:
    await store.responses.save(make_record("resp_1", status="in_progress"))
    await store.responses.save(make_record("resp_1", status="completed"))
    await store.responses.save(make_record("resp_1", owner="mallory", status="failed"))
    got = await store.responses.get("resp_1", "alice")
    assert got is not None and got.status == "completed"
    assert await store.responses.get("resp_1", "mallory") is None


async def test_update_unless_a_status_is_one_atomic_condition(store: StateStore) -> None:
    await store.responses.save(make_record("resp_1", status="in_progress"))
    assert await store.responses.update(make_record("resp_1", status="cancelled"), unless=("completed", "cancelled"))
    assert not await store.responses.update(make_record("resp_1", status="completed"), unless=("cancelled",))
    got = await store.responses.get("resp_1", "alice")
    assert got is not None and (got.status, got.response["status"]) == ("cancelled", "cancelled")
    assert await store.responses.update(make_record("resp_1", status="failed"))
    assert not await store.responses.update(make_record("resp_unknown"))


async def test_delete(store: StateStore) -> None:
    await store.responses.save(make_record("resp_1"))
    assert await store.responses.delete("resp_1", "alice")
    assert await store.responses.get("resp_1", "alice") is None
    assert not await store.responses.delete("resp_1", "alice")


async def test_chain_is_oldest_first_and_none_when_a_link_is_missing(store: StateStore) -> None:
    await store.responses.save(make_record("resp_1"))
    await store.responses.save(make_record("resp_2", previous="resp_1"))
    await store.responses.save(make_record("resp_3", previous="resp_2"))
    chain = await store.responses.chain("resp_3", "alice")
    assert chain is not None and [record.id for record in chain] == ["resp_1", "resp_2", "resp_3"]
    assert [record.id for record in await store.responses.chain("resp_1", "alice") or []] == ["resp_1"]
    assert await store.responses.chain("resp_unknown", "alice") is None
    await store.responses.delete("resp_2", "alice")
    assert await store.responses.chain("resp_3", "alice") is None


async def test_another_owner_sees_nothing(store: StateStore) -> None:
    await store.responses.save(make_record("resp_1"))
    await store.responses.save(make_record("resp_2", previous="resp_1", status="queued"))
    assert await store.responses.get("resp_1", "mallory") is None
    assert await store.responses.get("resp_1", "") is None  # auth off is an owner of its own
    assert await store.responses.chain("resp_2", "mallory") is None
    assert not await store.responses.delete("resp_1", "mallory")
    assert not await store.responses.update(make_record("resp_1", owner="mallory"))
    assert await store.responses.unfinished("mallory") == []
    assert await store.responses.get("resp_1", "alice") is not None  # untouched


async def test_a_chain_through_another_owners_record_is_missing(store: StateStore) -> None:
    await store.responses.save(make_record("resp_1", owner="mallory"))
    await store.responses.save(make_record("resp_2", previous="resp_1"))
    assert await store.responses.chain("resp_2", "alice") is None


async def test_unfinished_lists_queued_and_in_progress(store: StateStore) -> None:
    for index, status in enumerate(("queued", "in_progress", "completed", "failed", "cancelled", "incomplete")):
        await store.responses.save(make_record(f"resp_{index}", status=status))
    await store.responses.save(make_record("resp_other", owner="bob", status="queued"))
    assert [record.id for record in await store.responses.unfinished("alice")] == ["resp_0", "resp_1"]
    assert {record.id for record in await store.responses.unfinished()} == {"resp_0", "resp_1", "resp_other"}


async def test_expired_records_are_gone_before_the_purge(tmp_path: Path) -> None:
    store = await StateStore.open(sqlite_url(tmp_path), StoreLimits(60, 10_000))
    try:
        await store.responses.save(
            make_record("resp_old", created_at=int(time.time()) - 120)
        )  # ttl 60: expired already
        await store.responses.save(make_record("resp_new", previous="resp_old"))
        assert await store.responses.get("resp_old", "alice") is None
        assert await store.responses.chain("resp_new", "alice") is None
        assert not await store.responses.update(make_record("resp_old"))
        assert not await store.responses.delete("resp_old", "alice")
        assert await store.purge_expired() == 1
        assert await store.purge_expired() == 0
        assert await store.purge_expired(now=time.time() + 61) == 1  # resp_new, one ttl later
    finally:
        await store.close()


async def test_an_explicit_expires_at_is_kept(store: StateStore) -> None:
    expires_at = int(time.time()) + 2
    await store.responses.save(make_record("resp_1", expires_at=expires_at))
    got = await store.responses.get("resp_1", "alice")
    assert got is not None and got.expires_at == expires_at
    assert await store.purge_expired(now=expires_at - 1) == 0
    assert await store.purge_expired(now=expires_at + 0.5) == 1  # expired at expires_at itself


async def test_the_purger_purges_logs_and_survives_a_failure(
    store: StateStore, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    await store.responses.save(make_record("resp_old", expires_at=int(time.time()) - 1))
    real, calls = store.purge_expired, []

    async def first_fails(now: float | None = None) -> int:
        calls.append(now)
        if len(calls) == 1:
            raise RuntimeError("database hiccup")
        return await real(now)

    monkeypatch.setattr(store, "purge_expired", first_fails)
    caplog.set_level(logging.INFO, logger="openai_routes.store.state")
    purger = asyncio.create_task(store.run_purger(0.01))
    try:
        deadline = time.monotonic() + 60  # a guard against a hang, not a timing: the loop ends on the log line
        while "purged 1 expired records" not in caplog.text and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
    finally:
        purger.cancel()
    assert "purging expired records failed" in caplog.text
    assert "purged 1 expired records" in caplog.text


async def test_a_record_over_the_cap_is_refused_and_not_written(store: StateStore) -> None:
    fits = make_record("resp_1")
    room = (
        store.responses.max_response_bytes - len(dumps(fits.response).encode()) - len(dumps(fits.input_items).encode())
    )
    fits.input_items[0]["text"] += "é" * (room // 2)  # two bytes each: the cap counts bytes, not characters
    await store.responses.save(fits)
    too_big = make_record("resp_2")
    too_big.response["output"] = [{"text": "x" * store.responses.max_response_bytes}]
    with pytest.raises(StoreFullError, match="10000 bytes"):
        await store.responses.save(too_big)
    assert await store.responses.get("resp_2", "alice") is None
    with pytest.raises(StoreFullError):
        await store.responses.update(ResponseRecord(**{**vars(too_big), "id": "resp_1"}))
    assert isinstance(StoreFullError("x"), ValueError)


async def test_a_nul_character_is_stored_as_the_replacement_character(store: StateStore) -> None:
    record = make_record("resp_1")
    record.input_items[0]["text"] = "a\x00b"
    await store.responses.save(record)
    got = await store.responses.get("resp_1", "alice")
    assert got is not None and got.input_items[0]["text"] == "a\ufffdb"


async def test_reopening_keeps_the_data_and_migrates_nothing(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    first = await StateStore.open(url, StoreLimits(TTL, 10_000))
    await first.responses.save(make_record("resp_1"))
    await first.close()
    again = await asyncio.gather(*(StateStore.open(url, StoreLimits(TTL, 10_000)) for _ in range(3)))
    try:
        assert all([await store.responses.get("resp_1", "alice") for store in again])
    finally:
        for store in again:
            await store.close()
    with sqlite3.connect(tmp_path / "data" / "responses.db") as connection:
        assert connection.execute("SELECT version_num FROM alembic_version").fetchall() == [(HEAD,)]


def test_a_database_of_the_first_release_upgrades_and_keeps_its_responses(tmp_path: Path) -> None:
    """A store written at revision 0001 (responses only) gains the conversations and stored completions tables at
    the next open, its responses intact."""
    url = sqlite_url(tmp_path)
    (tmp_path / "data").mkdir()
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url)
    with create_engine(url).begin() as first:
        config.attributes["connection"] = first
        command.upgrade(config, "0001")
        record = make_record("resp_old")
        first.execute(insert(RESPONSES).values({**vars(record), "expires_at": 2**40, "updated_at": 0}))

    async def reopen() -> None:
        state = await StateStore.open(url, StoreLimits(TTL, 10_000))
        try:
            got = await state.responses.get("resp_old", "alice")
            assert got is not None and got.response == record.response
            made = ConversationRecord("conv_1", "alice", int(time.time()))
            await state.conversations.create(made, [{"id": "msg_1", "type": "message"}])
            assert await state.conversations.all_items("conv_1", "alice") == [{"id": "msg_1", "type": "message"}]
        finally:
            await state.close()

    asyncio.run(reopen())
    with sqlite3.connect(tmp_path / "data" / "responses.db") as connection:
        assert connection.execute("SELECT version_num FROM alembic_version").fetchall() == [(HEAD,)]


async def test_the_migrations_make_the_models_schema(store: StateStore) -> None:
    assert await schema_differences(store) == []


PRAGMAS = ("busy_timeout", "foreign_keys")


async def test_sqlite_runs_in_wal_mode_with_a_busy_timeout(store: StateStore, tmp_path: Path) -> None:
    await store.responses.save(make_record("resp_1"))
    async with store.engine.connect() as connection:
        pragmas = {name: (await connection.exec_driver_sql(f"PRAGMA {name}")).scalar() for name in PRAGMAS}
    assert pragmas == {"busy_timeout": 30_000, "foreign_keys": 1}
    with sqlite3.connect(tmp_path / "data" / "responses.db") as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_urls_take_the_async_drivers() -> None:
    assert str(async_url("postgres://u:p@db/x")) == "postgresql+asyncpg://u:***@db/x"
    pg = async_url("postgresql://postgres:@/postgres?host=/tmp/pg&sslmode=require")
    assert (pg.drivername, pg.database, dict(pg.query)) == (
        "postgresql+asyncpg",
        "postgres",
        {"host": "/tmp/pg", "ssl": "require"},
    )
    assert async_url("postgresql+asyncpg://db/x").drivername == "postgresql+asyncpg"
    assert async_url("sqlite:////data/r.db").drivername == "sqlite+aiosqlite"
    assert async_url("sqlite+aiosqlite:///r.db").database == "r.db"
    for unsupported in ("mysql://db/x", "postgresql+psycopg2://db/x", "sqlite+pysqlite:///r.db"):
        with pytest.raises(ValueError, match="unsupported store URL"):
            async_url(unsupported)


WRITER = """
import asyncio, sys, time
from openai_routes.store import ResponseRecord, StateStore, StoreLimits

async def main():
    store = await StateStore.open(sys.argv[1], StoreLimits(3600, 1 << 20))
    print("ready", flush=True)
    for index in range(10**9):
        rid = f"resp_child_{index}"
        output = [{"type": "message", "text": "x" * 2000}]
        record = ResponseRecord(rid, "alice", int(time.time()), "completed", {"id": rid, "output": output}, [])
        await store.responses.save(record)
        print(rid, flush=True)

asyncio.run(main())
"""


async def test_a_writer_killed_mid_write_loses_nothing_it_confirmed(tmp_path: Path) -> None:
    """The child saves as fast as it can and prints each id once ``save`` returned; meanwhile this process writes
    the same file too (two processes, one SQLite file). SIGKILL once both have written twenty (counts, not a clock:
    on a busy machine one writer can wait a long time for the other's lock): every printed id is there."""
    url = sqlite_url(tmp_path)
    child = subprocess.Popen([sys.executable, "-c", WRITER, url], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    assert child.stdout.readline() == "ready\n"
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(child.stdout or ()), daemon=True)
    reader.start()
    store = await StateStore.open(url, StoreLimits(TTL, 1 << 20))
    try:
        ours = 0
        while (ours < 20 or len(lines) < 20) and child.poll() is None:
            await store.responses.save(make_record(f"resp_parent_{ours}"))
            ours += 1
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(timeout=10) == -signal.SIGKILL
        reader.join(timeout=10)
    finally:
        await store.close()
    confirmed = [line.strip() for line in lines if line.endswith("\n")]  # a cut last line was never confirmed
    assert len(confirmed) >= 20 and ours >= 20
    reopened = await StateStore.open(url, StoreLimits(TTL, 1 << 20))
    try:
        missing = [rid for rid in confirmed if await reopened.responses.get(rid, "alice") is None]
        missing += [
            f"resp_parent_{i}" for i in range(ours) if await reopened.responses.get(f"resp_parent_{i}", "alice") is None
        ]
    finally:
        await reopened.close()
    assert missing == []
    with sqlite3.connect(tmp_path / "data" / "responses.db") as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)


async def test_conversations_and_completions_expire_a_ttl_after_their_last_change(tmp_path: Path) -> None:
    state = await StateStore.open(sqlite_url(tmp_path), StoreLimits(60, 10_000))
    try:
        await state.conversations.create(ConversationRecord("conv_1", "alice", int(time.time())), [{"id": "msg_1"}])
        completion = CompletionRecord("chatcmpl-1", "alice", "m", int(time.time()), {"id": "chatcmpl-1"}, [])
        await state.completions.save(completion)
        assert await state.purge_expired() == 0
        assert await state.purge_expired(now=time.time() + 61) == 2  # the conversation and the completion
        assert await state.conversations.get("conv_1", "alice") is None
        assert await state.completions.get("chatcmpl-1", "alice") is None
        async with state.engine.connect() as connection:  # the items went with their conversation
            assert (await connection.exec_driver_sql("SELECT count(*) FROM conversation_items")).scalar() == 0
    finally:
        await state.close()
