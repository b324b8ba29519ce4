"""The Responses store on a real PostgreSQL server started from the ``pgserver`` wheel (no system install): the
URL pgserver gives, JSONB, two replicas on one server (files too), and replicas that open (and migrate) at once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator

import pytest

from openai_routes.store import (
    CompletionRecord,
    ConversationRecord,
    FileRefused,
    StateStore,
    StoreFullError,
    StoreLimits,
)
from openai_routes.store.files import CHUNK_BYTES
from openai_routes.store.pages import PageQuery
from tests.unit.store_fixtures import HEAD, TTL, Postgres, make_record, schema_differences


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Postgres]:
    server = Postgres(tmp_path_factory.mktemp("pg") / "data")
    yield server
    server.server.cleanup()


async def open_replicas(url: str, count: int = 2) -> list[StateStore]:
    """``count`` stores opened at once on one database, as replicas starting together (the advisory lock)."""
    return list(await asyncio.gather(*(StateStore.open(url, StoreLimits(TTL, 10_000)) for _ in range(count))))


async def test_postgres_uri_is_a_unix_socket_url_the_store_accepts(postgres: Postgres) -> None:
    url = postgres.new_database()
    assert url.startswith("postgresql://postgres:@/store_") and "?host=/" in url
    (store,) = await open_replicas(url, 1)
    try:
        assert store.engine.dialect.name == "postgresql" and store.engine.dialect.driver == "asyncpg"
        assert await schema_differences(store) == []
        async with store.engine.connect() as connection:
            columns = await connection.exec_driver_sql(
                "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'responses'"
            )
            types = {str(row["column_name"]): str(row["data_type"]) for row in columns.mappings()}
        assert types["response"] == types["input_items"] == "jsonb"
    finally:
        await store.close()


async def test_two_replicas_share_one_postgres(postgres: Postgres) -> None:
    one, two = await open_replicas(postgres.new_database())
    try:
        await one.responses.save(make_record("resp_1"))
        await one.responses.save(make_record("resp_2", previous="resp_1", status="in_progress"))
        got = await two.responses.get("resp_2", "alice")
        assert got is not None and got.previous_response_id == "resp_1"
        assert [record.id for record in await two.responses.chain("resp_2", "alice") or []] == ["resp_1", "resp_2"]
        assert [record.id for record in await two.responses.unfinished()] == ["resp_2"]
        assert await two.responses.update(
            make_record("resp_2", previous="resp_1", status="cancelled"), unless=("completed",)
        )
        assert not await one.responses.update(
            make_record("resp_2", previous="resp_1", status="completed"), unless=("cancelled",)
        )
        assert (
            await two.responses.get("resp_1", "mallory") is None
            and await two.responses.chain("resp_2", "mallory") is None
        )
        assert not await two.responses.delete("resp_1", "mallory")
        assert await two.responses.delete("resp_1", "alice")
        assert (
            await one.responses.get("resp_1", "alice") is None and await one.responses.chain("resp_2", "alice") is None
        )
    finally:
        await one.close()
        await two.close()


async def test_postgres_expiry_purge_cap_and_nul(postgres: Postgres) -> None:
    (store,) = await open_replicas(postgres.new_database(), 1)
    try:
        record = make_record("resp_1")
        record.input_items[0]["text"] = "a\x00b"  # jsonb refuses \u0000
        await store.responses.save(record)
        got = await store.responses.get("resp_1", "alice")
        assert got is not None and got.input_items[0]["text"] == "a\ufffdb"
        await store.responses.save(make_record("resp_old", expires_at=int(time.time()) - 1))
        assert await store.responses.get("resp_old", "alice") is None
        assert await store.purge_expired() == 1
        assert await store.purge_expired(now=time.time() + TTL + 1) == 1
        too_big = make_record("resp_2")
        too_big.response["output"] = [{"text": "x" * 10_000}]
        with pytest.raises(StoreFullError):
            await store.responses.save(too_big)
    finally:
        await store.close()


async def test_replicas_opening_at_once_migrate_once(postgres: Postgres) -> None:
    """Four opens of a fresh database at once: the advisory lock lets one migrate, the others then find the head."""
    url = postgres.new_database()
    stores = await open_replicas(url, 4)
    try:
        async with stores[0].engine.connect() as connection:
            versions = (await connection.exec_driver_sql("SELECT version_num FROM alembic_version")).all()
        assert versions == [(HEAD,)]
        (again,) = await open_replicas(url, 1)  # and a later open is a no-op
        await again.close()
    finally:
        for store in stores:
            await store.close()


async def test_two_replicas_share_conversations_and_stored_completions(postgres: Postgres) -> None:
    one, two = await open_replicas(postgres.new_database())
    try:
        await one.conversations.create(ConversationRecord("conv_1", "alice", int(time.time()), {"k": "v"}), [])
        assert await two.conversations.add_items("conv_1", "alice", [{"id": f"msg_{i}"} for i in range(3)])
        assert not await two.conversations.add_items("conv_1", "mallory", [{"id": "msg_x"}])
        page = await one.conversations.items("conv_1", "alice", PageQuery(limit=2, order="asc"))
        assert page == ([{"id": "msg_0"}, {"id": "msg_1"}], True)
        assert await one.conversations.items("conv_1", "mallory", PageQuery()) is None
        for i, metadata in enumerate(({"team": "a"}, {"team": "b"}, {"team": "a", "env": "prod"})):
            record = CompletionRecord(f"chatcmpl-{i}", "alice", "m", int(time.time()), {"id": f"chatcmpl-{i}"}, [])
            record.metadata = metadata
            await (one if i % 2 else two).completions.save(record)
        team_a, more = await two.completions.list("alice", PageQuery(order="asc"), metadata={"team": "a"})
        assert [record.id for record in team_a] == ["chatcmpl-0", "chatcmpl-2"] and not more
        both, _ = await one.completions.list("alice", PageQuery(), metadata={"team": "a", "env": "prod"})
        assert [record.id for record in both] == ["chatcmpl-2"]
        assert (await one.completions.list("mallory", PageQuery()))[0] == []
        assert await one.conversations.delete("conv_1", "alice")
        assert await two.conversations.all_items("conv_1", "alice") is None
    finally:
        await one.close()
        await two.close()


async def test_two_replicas_share_files_in_bytea_chunks(postgres: Postgres) -> None:
    """A file written by one replica is read, paged and deleted by another; its chunks go with it (cascade), and a
    file over a cap leaves nothing on PostgreSQL either."""
    one, two = await open_replicas(postgres.new_database())
    try:
        data = bytes(range(256)) * (CHUNK_BYTES * 3 // 2 // 256)  # one and a half chunks, NUL bytes included

        async def pieces(*parts: bytes) -> AsyncIterator[bytes]:
            for part in parts:
                yield part

        record = await one.files.create("alice", "user_data", "a.bin", pieces(data[:1000], data[1000:]))
        assert await two.files.get(record.id, "alice") == record and await two.files.get(record.id, "bob") is None
        assert b"".join([chunk async for chunk in two.files.content(record.id, "alice")]) == data
        listed, more = await two.files.list("alice", PageQuery(), purpose="user_data")
        assert [found.id for found in listed] == [record.id] and not more
        with pytest.raises(FileRefused):
            await one.files.create("alice", "batch", "b.jsonl", pieces(b"{}\n" * (one.files.max_batch_lines + 1)))
        assert await two.files.delete(record.id, "alice")
        async with one.engine.connect() as connection:
            left = (await connection.exec_driver_sql("SELECT count(*) FROM file_chunks")).scalar_one()
            files = (await connection.exec_driver_sql("SELECT count(*) FROM files")).scalar_one()
        assert (files, left) == (0, 0)
    finally:
        await one.close()
        await two.close()
