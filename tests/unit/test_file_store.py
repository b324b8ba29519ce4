"""``FileStore`` on a real SQLite file: chunked writes and reads, owners, the caps (bytes; a batch file's lines)
leaving nothing behind, a failed or cancelled write leaving nothing, uploads invisible until whole, pages, expiry and
the purge (chunks cascading). PostgreSQL replicas sharing a file: ``test_store_postgres.py``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from openai_routes.store import StateStore, StoreLimits
from openai_routes.store.files import CHUNK_BYTES, FileRefused, FileTooLarge, TooManyLines, UnknownFileCursor
from openai_routes.store.pages import PageQuery
from openai_routes.store.tables import FILE_CHUNKS, FILES
from tests.unit.store_fixtures import TTL

MAX_FILE = 3 * CHUNK_BYTES
MAX_LINES = 10


@pytest.fixture
async def state(tmp_path: Path) -> AsyncIterator[StateStore]:
    limits = StoreLimits(TTL, 10_000, max_file_bytes=MAX_FILE, max_batch_lines=MAX_LINES)
    opened = await StateStore.open(f"sqlite:///{tmp_path / 'files.db'}", limits)
    yield opened
    await opened.close()


async def pieces(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


def split(data: bytes, size: int) -> list[bytes]:
    return [data[start : start + size] for start in range(0, len(data), size)]


async def content(state: StateStore, file_id: str, owner: str = "alice") -> bytes:
    return b"".join([chunk async for chunk in state.files.content(file_id, owner)])


async def rows(state: StateStore) -> tuple[int, int]:
    """How many ``files`` and ``file_chunks`` rows there are."""
    async with state.engine.connect() as connection:
        files = (await connection.execute(select(func.count()).select_from(FILES))).scalar_one()
        chunks = (await connection.execute(select(func.count()).select_from(FILE_CHUNKS))).scalar_one()
    return files, chunks


async def test_a_file_is_written_in_chunk_rows_and_read_back_in_order(state: StateStore) -> None:
    data = bytes(range(256)) * (CHUNK_BYTES * 5 // 2 // 256)  # 2.5 chunks, sent in odd pieces
    record = await state.files.create("alice", "user_data", "in.bin", pieces(*split(data, 300_001)))
    assert record.id.startswith("file-") and record.bytes == len(data)
    assert record.expires_at is not None and record.expires_at - record.created_at == TTL
    assert await rows(state) == (1, 3)
    assert await content(state, record.id) == data
    assert [len(chunk) async for chunk in state.files.content(record.id, "alice")] == [CHUNK_BYTES] * 2 + [
        len(data) - 2 * CHUNK_BYTES
    ]
    assert await state.files.get(record.id, "alice") == record
    assert record.object() == {
        "id": record.id, "object": "file", "bytes": len(data), "created_at": record.created_at,
        "expires_at": record.expires_at, "filename": "in.bin", "purpose": "user_data", "status": "processed",
        "status_details": None,
    }  # fmt: skip


async def test_an_empty_file_and_an_explicit_expiry(state: StateStore) -> None:
    expires = int(time.time()) + 7200
    record = await state.files.create("alice", "user_data", "empty.txt", pieces(), expires_at=expires)
    assert record.bytes == 0 and record.expires_at == expires
    assert await content(state, record.id) == b""


async def test_another_owner_sees_nothing(state: StateStore) -> None:
    record = await state.files.create("alice", "batch", "a.jsonl", pieces(b"{}\n"))
    assert await state.files.get(record.id, "mallory") is None
    assert await state.files.list("mallory", PageQuery()) == ([], False)
    assert await content(state, record.id, "mallory") == b""
    assert not await state.files.delete(record.id, "mallory")
    assert await content(state, record.id) == b"{}\n"


@pytest.mark.parametrize(
    ("purpose", "parts", "error"),
    [
        ("user_data", [b"x" * CHUNK_BYTES] * 3 + [b"x"], FileTooLarge),  # one byte over, after three chunks
        ("batch", [b"{}\n" * 6, b"{}\n" * 5], TooManyLines),
        ("batch", [b"{}\n" * 10, b"{}"], TooManyLines),  # a last line without its newline counts
    ],
)
async def test_a_file_over_a_cap_is_refused_and_nothing_is_kept(
    state: StateStore, purpose: str, parts: list[bytes], error: type[FileRefused]
) -> None:
    with pytest.raises(error) as refused:
        await state.files.create("alice", purpose, "f", pieces(*parts))
    assert isinstance(refused.value, ValueError) and str(refused.value)
    assert await rows(state) == (0, 0)


async def test_at_the_caps_a_file_is_kept_and_only_batch_files_count_lines(state: StateStore) -> None:
    assert (await state.files.create("alice", "user_data", "f", pieces(b"x" * MAX_FILE))).bytes == MAX_FILE
    assert (await state.files.create("alice", "batch", "f", pieces(b"{}\n" * MAX_LINES))).bytes == 3 * MAX_LINES
    assert (await state.files.create("alice", "batch_output", "f", pieces(b"{}\n" * 50))).purpose == "batch_output"
    assert (await state.files.create("alice", "fine-tune", "f", pieces(b"\n" * 50))).bytes == 50


async def test_a_failed_or_cancelled_write_leaves_nothing(state: StateStore) -> None:
    async def failing() -> AsyncIterator[bytes]:
        yield b"x" * (CHUNK_BYTES + 1)
        raise RuntimeError("the producer failed")

    with pytest.raises(RuntimeError):
        await state.files.create("alice", "batch", "f", failing())
    assert await rows(state) == (0, 0)

    started, hold = asyncio.Event(), asyncio.Event()

    async def stalled() -> AsyncIterator[bytes]:
        yield b"x" * (CHUNK_BYTES + 1)
        started.set()
        await hold.wait()
        yield b"never"

    write = asyncio.create_task(state.files.create("alice", "batch", "f", stalled()))
    await started.wait()
    await asyncio.sleep(0.05)
    assert await rows(state) == (1, 1), "the first chunk is written as it comes"
    assert await state.files.list("alice", PageQuery()) == ([], False), "an upload is invisible until whole"
    write.cancel()
    with pytest.raises(asyncio.CancelledError):
        await write
    await asyncio.sleep(0.05)  # the shielded discard
    assert await rows(state) == (0, 0)


async def test_pages_by_purpose_order_and_cursor(state: StateStore) -> None:
    made = [
        await state.files.create("alice", purpose, f"{index}", pieces(b"{}\n"))
        for index, purpose in enumerate(["batch", "user_data", "batch", "batch"])
    ]
    ids = [record.id for record in made]

    def listed(found: tuple[list, bool]) -> tuple[list[str], bool]:  # type: ignore[type-arg]
        return [record.id for record in found[0]], found[1]

    assert listed(await state.files.list("alice", PageQuery(limit=10))) == (ids[::-1], False)
    batch = [ids[0], ids[2], ids[3]]
    assert listed(await state.files.list("alice", PageQuery(limit=2, order="asc"), purpose="batch")) == (
        batch[:2],
        True,
    )
    after = PageQuery(limit=2, order="asc", after=batch[1])
    assert listed(await state.files.list("alice", after, purpose="batch")) == (batch[2:], False)
    with pytest.raises(UnknownFileCursor):
        await state.files.list("mallory", PageQuery(after=ids[0]))


async def test_delete_and_the_purge_take_the_chunks_with_the_file(state: StateStore) -> None:
    kept = await state.files.create("alice", "batch", "kept", pieces(b"x" * (CHUNK_BYTES + 1)))
    gone = await state.files.create("alice", "batch", "gone", pieces(b"x" * (CHUNK_BYTES + 1)))
    assert await state.files.delete(gone.id, "alice") and await rows(state) == (1, 2)
    assert not await state.files.delete(gone.id, "alice")
    expired = await state.files.create("alice", "batch", "old", pieces(b"x"), expires_at=int(time.time()) - 1)
    assert await state.files.get(expired.id, "alice") is None, "an expired file is gone before the purge"
    assert await state.purge_expired() == 1 and await rows(state) == (1, 2)
    assert await state.purge_expired(now=time.time() + TTL + 1) == 1
    assert await rows(state) == (0, 0) and await state.files.get(kept.id, "alice") is None
