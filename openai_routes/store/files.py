"""``FileStore``: files (``/v1/files`` uploads, and the files the batch runner writes), their bytes in the database.

A file's bytes are ``file_chunks`` rows of at most ``CHUNK_BYTES`` each, so PostgreSQL replicas share files and
neither a write nor a read ever holds a whole file in memory. A file is written as a ``files`` row marked
``uploading`` (invisible to every read), then its chunks one short transaction each (a slow producer never holds
SQLite's write lock), then marked ``processed`` with its size and expiry. A write that fails (over a cap, cancelled,
its producer raising) deletes what it wrote; one whose process died is purged ``UPLOAD_WINDOW`` seconds after it
began. As every store query, each is scoped by owner and by ``expires_at > now``: another key's file does not exist.

Caps: ``max_file_bytes`` for every file, and ``max_batch_lines`` lines for ``purpose: "batch"`` (a request per line).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, and_, delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from openai_routes.store.pages import PageQuery, now, page
from openai_routes.store.records import StoreFullError
from openai_routes.store.tables import FILE_CHUNKS, FILES

logger = logging.getLogger(__name__)

FILE = FILES.c
CHUNK = FILE_CHUNKS.c
CHUNK_BYTES = 1 << 20  # one row of file_chunks
UPLOAD_WINDOW = 86_400  # seconds after which a file still "uploading" is an abandoned write (the purge takes it)


@dataclass
class FileRecord:
    id: str  # "file-..."
    owner: str
    purpose: str
    filename: str
    bytes: int
    created_at: int
    expires_at: int | None

    def object(self) -> dict[str, Any]:
        """The wire ``FileObject`` (every field of the openai package's type)."""
        return {
            "id": self.id,
            "object": "file",
            "bytes": self.bytes,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "status_details": None,
        }


class FileRefused(StoreFullError):
    """A file over one of the store's caps; nothing of it is kept."""


class FileTooLarge(FileRefused):
    def __init__(self, limit: int) -> None:
        super().__init__(f"The file is larger than {limit} bytes, the most one file may take.")
        self.limit = limit


class TooManyLines(FileRefused):
    def __init__(self, limit: int) -> None:
        super().__init__(f"A batch input file holds at most {limit} lines (one request per line).")
        self.limit = limit


class UnknownFileCursor(LookupError):
    """``after`` names no file of the list (the route answers 400 on ``after``)."""


class FileStore:
    def __init__(self, engine: AsyncEngine, *, ttl: int, max_file_bytes: int, max_batch_lines: int) -> None:
        self.engine = engine
        self.ttl = ttl
        self.max_file_bytes = max_file_bytes
        self.max_batch_lines = max_batch_lines

    async def create(
        self,
        owner: str,
        purpose: str,
        filename: str,
        chunks: AsyncIterable[bytes],
        *,
        expires_at: int | None = None,
    ) -> FileRecord:
        """Write ``chunks`` as a new file; ``FileRefused`` (nothing kept) over a cap. Without ``expires_at``, the file
        is kept the store's ttl."""
        created = now()
        record = FileRecord(f"file-{uuid.uuid4().hex}", owner, purpose, filename, 0, created, expires_at)
        record.expires_at = created + self.ttl if expires_at is None else expires_at
        async with self.engine.begin() as connection:
            await connection.execute(
                insert(FILES).values(
                    id=record.id, owner=owner, purpose=purpose, filename=filename, bytes=0, created_at=created,
                    expires_at=created + UPLOAD_WINDOW, status="uploading",
                )
            )  # fmt: skip
        try:
            record.bytes = await self._write(record.id, chunks, count_lines=purpose == "batch")
            async with self.engine.begin() as connection:
                await connection.execute(
                    update(FILES)
                    .where(FILE.id == record.id)
                    .values(bytes=record.bytes, expires_at=record.expires_at, status="processed")
                )
        except BaseException:
            await asyncio.shield(self._discard(record.id))
            raise
        return record

    async def _write(self, file_id: str, chunks: AsyncIterable[bytes], *, count_lines: bool) -> int:
        """Store ``chunks`` as rows of ``CHUNK_BYTES``, checking the caps as they come; the file's size."""
        pending, index, size, lines, last = bytearray(), 0, 0, 0, b"\n"
        async for piece in chunks:
            if not piece:
                continue
            size += len(piece)
            if size > self.max_file_bytes:
                raise FileTooLarge(self.max_file_bytes)
            lines, last = lines + piece.count(b"\n"), piece[-1:]
            if count_lines and lines > self.max_batch_lines:
                raise TooManyLines(self.max_batch_lines)
            pending += piece
            while len(pending) >= CHUNK_BYTES:
                await self._put(file_id, index, bytes(pending[:CHUNK_BYTES]))
                del pending[:CHUNK_BYTES]
                index += 1
        if count_lines and lines + (last != b"\n") > self.max_batch_lines:  # a last line without its newline
            raise TooManyLines(self.max_batch_lines)
        if pending:
            await self._put(file_id, index, bytes(pending))
        return size

    async def _put(self, file_id: str, index: int, data: bytes) -> None:
        async with self.engine.begin() as connection:
            await connection.execute(insert(FILE_CHUNKS).values(file_id=file_id, index=index, data=data))

    async def _discard(self, file_id: str) -> None:
        try:
            async with self.engine.begin() as connection:
                await connection.execute(delete(FILES).where(FILE.id == file_id))
        except Exception:  # the purge takes it once UPLOAD_WINDOW has passed
            logger.exception("could not discard the unfinished file %s", file_id)

    async def get(self, file_id: str, owner: str) -> FileRecord | None:
        async with self.engine.connect() as connection:
            row = (await connection.execute(select(FILES).where(_visible(owner), FILE.id == file_id))).first()
        return None if row is None else _record(row)

    async def list(self, owner: str, query: PageQuery, *, purpose: str | None = None) -> tuple[list[FileRecord], bool]:
        """A page of the owner's files (``UnknownFileCursor`` for an ``after`` that is not one of them)."""
        condition = _visible(owner) if purpose is None else and_(_visible(owner), FILE.purpose == purpose)
        async with self.engine.connect() as connection:
            found = await page(connection, FILES, condition, query)
        if found is None:
            raise UnknownFileCursor(query.after)
        rows, more = found
        return [_record(row) for row in rows], more

    async def delete(self, file_id: str, owner: str) -> bool:
        async with self.engine.begin() as connection:  # its chunks go with it (ON DELETE CASCADE)
            result = await connection.execute(delete(FILES).where(_visible(owner), FILE.id == file_id))
        return result.rowcount > 0

    async def content(self, file_id: str, owner: str) -> AsyncIterator[bytes]:
        """The file's bytes, chunk by chunk, each read on a connection of its own (a slow reader holds none); it ends
        early if the file is deleted meanwhile, and yields nothing for a file the owner cannot see."""
        if await self.get(file_id, owner) is None:
            return
        index = 0
        while True:
            async with self.engine.connect() as connection:
                data = (
                    await connection.execute(select(CHUNK.data).where(CHUNK.file_id == file_id, CHUNK.index == index))
                ).scalar()
            if data is None:
                return
            yield data
            index += 1

    async def purge_expired(self, cutoff: int) -> int:
        async with self.engine.begin() as connection:
            result = await connection.execute(delete(FILES).where(FILE.expires_at <= cutoff))
        return result.rowcount


def _visible(owner: str) -> ColumnElement[bool]:
    return and_(FILE.owner == owner, FILE.status == "processed", FILE.expires_at > now())


def _record(row: Any) -> FileRecord:
    return FileRecord(row.id, row.owner, row.purpose, row.filename, row.bytes, row.created_at, row.expires_at)
