"""The Files API (https://platform.openai.com/docs/api-reference/files):

- ``POST /v1/files`` (multipart: ``file``, ``purpose``, optional ``expires_after``), ``GET /v1/files`` (``purpose``,
  ``limit``, ``order``, ``after``), ``GET``/``DELETE /v1/files/{id}``, ``GET /v1/files/{id}/content`` (the bytes)

An upload is never whole in memory: ``server.guard.RequestGuard`` passes its body through as it arrives (``UPLOAD``
is its path; 413 past ``limits.max_file_bytes`` plus the form's overhead), Starlette's multipart parser spools the
file (in memory up to 1 MiB, then a temporary file), so the form's parts may come in any order, and the store copies
it into the database in 1 MiB rows, checking the caps (the file's size; a ``batch`` file's lines). Content is
streamed back from those rows. Everything is scoped to the caller's key: another key's file is a 404.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse
from starlette.datastructures import UploadFile

from openai_routes.core.errors import APIError, bad_request
from openai_routes.endpoints.files.protocol import UPLOAD_BODY, FileDeleted, FileObject, expires_after, upload_purpose
from openai_routes.endpoints.lists import page_params
from openai_routes.protocol.common import ObjectList
from openai_routes.server.auth import key_owner
from openai_routes.server.json_body import StrictJSONRoute
from openai_routes.store.book import ResponseBook
from openai_routes.store.files import CHUNK_BYTES, FileRecord, FileTooLarge, TooManyLines, UnknownFileCursor
from openai_routes.store.pages import PageQuery, now

UPLOAD = "/files"  # the streamed path, within /v1 (RequestGuard's ``streamed``)
MAX_FORM_FIELD_BYTES = 64 * 1024
FilePage = Annotated[PageQuery, Depends(page_params("desc", default_limit=10_000, max_limit=10_000))]


def file_not_found(file_id: str) -> APIError:
    return APIError(404, f"No such File object: {file_id}", param="id")


def wire(record: FileRecord) -> FileObject:
    return FileObject.model_validate(record.object())


async def read_upload(upload: UploadFile) -> AsyncIterator[bytes]:
    while data := await upload.read(CHUNK_BYTES):
        yield data


def create_router(book: ResponseBook) -> APIRouter:
    router = APIRouter(route_class=StrictJSONRoute)

    async def find(file_id: str, owner: str) -> FileRecord:
        record = await book.state.files.get(file_id, owner)
        if record is None:
            raise file_not_found(file_id)
        return record

    @router.post(UPLOAD, openapi_extra=UPLOAD_BODY)
    async def create_file(http: Request) -> FileObject:
        async with http.form(max_files=1, max_fields=16, max_part_size=MAX_FORM_FIELD_BYTES) as form:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise bad_request("'file' is required, as a file part of a multipart/form-data body.", param="file")
            purpose = upload_purpose(form.get("purpose"))
            seconds = expires_after(form.get("expires_after[anchor]"), form.get("expires_after[seconds]"))
            expires_at = None if seconds is None else now() + seconds  # the store's created_at is this second
            try:
                record = await book.state.files.create(
                    key_owner(http.scope),
                    purpose,
                    upload.filename or "file",
                    read_upload(upload),
                    expires_at=expires_at,
                )
            except FileTooLarge as exc:
                raise APIError(413, str(exc), param="file", code="file_too_large") from None
            except TooManyLines as exc:
                raise bad_request(str(exc), param="file", code="too_many_lines") from None
        return wire(record)

    @router.get("/files")
    async def list_files(http: Request, query: FilePage, purpose: str | None = Query(default=None)) -> ObjectList:
        try:
            records, more = await book.state.files.list(key_owner(http.scope), query, purpose=purpose)
        except UnknownFileCursor:
            raise bad_request(f"No file with id '{query.after}' in this list.", param="after") from None
        return ObjectList.of([wire(record) for record in records], more)

    @router.get("/files/{file_id}")
    async def retrieve_file(file_id: str, http: Request) -> FileObject:
        return wire(await find(file_id, key_owner(http.scope)))

    @router.delete("/files/{file_id}")
    async def delete_file(file_id: str, http: Request) -> FileDeleted:
        if not await book.state.files.delete(file_id, key_owner(http.scope)):
            raise file_not_found(file_id)
        return FileDeleted(id=file_id)

    @router.get("/files/{file_id}/content", response_class=StreamingResponse)
    async def file_content(file_id: str, http: Request) -> StreamingResponse:
        owner = key_owner(http.scope)
        record = await find(file_id, owner)
        headers = {"Content-Length": str(record.bytes)}
        return StreamingResponse(
            book.state.files.content(file_id, owner), media_type="application/octet-stream", headers=headers
        )

    return router
