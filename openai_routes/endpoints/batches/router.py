"""The Batch API (https://platform.openai.com/docs/api-reference/batch):

- ``POST /v1/batches``: a batch of the lines of an uploaded ``batch`` file, for one endpoint (``protocol.ENDPOINTS``)
- ``GET /v1/batches/{id}``, ``GET /v1/batches`` (newest first, ``after`` and ``limit``)
- ``POST /v1/batches/{id}/cancel``: no new line starts, running ones are aborted, and what is done is kept

A batch is created ``validating`` and worked on by every worker's ``BatchRunner`` (``runner.py``); its results are
files (``GET /v1/files/{id}/content``). Everything is scoped to the caller's key: another key's batch, or file, is a
404.
"""

from __future__ import annotations

import secrets

from fastapi import APIRouter, Query, Request

from openai_routes.core.errors import APIError, bad_request
from openai_routes.endpoints.batches.protocol import ENDPOINTS, Batch, BatchCreateRequest
from openai_routes.endpoints.lists import page_query
from openai_routes.protocol.common import ObjectList
from openai_routes.server.auth import key_owner
from openai_routes.server.json_body import StrictJSONRoute
from openai_routes.store.batches import UnknownBatchCursor
from openai_routes.store.book import ResponseBook
from openai_routes.store.pages import now

WINDOW = 24 * 3600  # "24h", the one completion window


def batch_not_found(batch_id: str) -> APIError:
    return APIError(404, f"Batch with id '{batch_id}' not found.", code="not_found", param="batch_id")


def create_router(book: ResponseBook) -> APIRouter:
    router = APIRouter(route_class=StrictJSONRoute)

    @router.post("/batches")
    async def create_batch(request: BatchCreateRequest, http: Request) -> Batch:
        if request.endpoint not in ENDPOINTS:
            raise bad_request(
                f"The endpoint '{request.endpoint}' is not served in batches here; use one of {', '.join(ENDPOINTS)}.",
                param="endpoint",
            )
        owner = key_owner(http.scope)
        found = await book.state.files.get(request.input_file_id, owner)
        if found is None:
            raise APIError(
                404, f"No such File object: {request.input_file_id}", code="not_found", param="input_file_id"
            )
        if found.purpose != "batch":
            raise bad_request("The input file must be uploaded with the purpose 'batch'.", param="input_file_id")
        created = now()
        batch = Batch(
            id=f"batch_{secrets.token_hex(12)}",
            endpoint=request.endpoint,
            input_file_id=request.input_file_id,
            completion_window=request.completion_window,
            status="validating",
            created_at=created,
            expires_at=created + WINDOW,
            metadata=request.metadata,
        )
        stored = batch.model_dump()
        if request.output_expires_after is not None:
            stored["output_expires_after"] = request.output_expires_after.model_dump()
        await book.state.batches.create(stored, owner, created + WINDOW)
        return batch

    @router.get("/batches/{batch_id}")
    async def get_batch(batch_id: str, http: Request) -> Batch:
        batch = await book.state.batches.get(batch_id, key_owner(http.scope))
        if batch is None:
            raise batch_not_found(batch_id)
        return Batch.model_validate(batch)

    @router.get("/batches")
    async def list_batches(
        http: Request, limit: int = Query(default=20), after: str | None = Query(default=None)
    ) -> ObjectList:
        query = page_query(limit, "desc", after)
        try:
            batches, more = await book.state.batches.list(key_owner(http.scope), query)
        except UnknownBatchCursor:
            raise bad_request(f"No batch with id '{after}'.", param="after") from None
        return ObjectList.of([Batch.model_validate(batch) for batch in batches], more)

    @router.post("/batches/{batch_id}/cancel")
    async def cancel_batch(batch_id: str, http: Request) -> Batch:
        batch = await book.state.batches.cancel(batch_id, key_owner(http.scope))
        if batch is None:
            raise batch_not_found(batch_id)
        return Batch.model_validate(batch)

    return router
