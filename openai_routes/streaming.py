"""Server-sent events: frames ``data: <json>\\n\\n``, ends with ``data: [DONE]``, and reports a failure that
happens after the headers went out as an error frame (the SDK raises ``APIError`` from it).

Errors found before the first byte are plain HTTP errors: routers prime their event iterator with
``prime`` before building the response, so validation and engine admission errors surface first.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Generic, TypeVar

from pydantic import BaseModel
from starlette.responses import StreamingResponse

from openai_routes.errors import as_api_error

T = TypeVar("T")
DONE = b"data: [DONE]\n\n"
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def frame(event: BaseModel) -> bytes:
    return b"data: " + event.model_dump_json().encode() + b"\n\n"


async def sse_frames(events: AsyncIterator[BaseModel]) -> AsyncIterator[bytes]:
    try:
        async for event in events:
            yield frame(event)
    except Exception as exc:
        yield b"data: " + json.dumps(as_api_error(exc).body()).encode() + b"\n\n"
    yield DONE


class Primed(Generic[T]):
    """An async iterator already advanced to its first item; closing it closes the source."""

    def __init__(self, first: T, source: AsyncGenerator[T, None]) -> None:
        self._first: list[T] = [first]
        self._source = source

    def __aiter__(self) -> Primed[T]:
        return self

    async def __anext__(self) -> T:
        if self._first:
            return self._first.pop()
        return await anext(self._source)

    async def aclose(self) -> None:
        await self._source.aclose()


async def prime(source: AsyncGenerator[T, None]) -> Primed[T]:
    """Run ``source`` up to its first item now, so its early errors raise before any byte is sent."""
    first = await anext(source)
    return Primed(first, source)


def sse_response(events: AsyncIterator[BaseModel]) -> StreamingResponse:
    return StreamingResponse(sse_frames(events), media_type="text/event-stream", headers=HEADERS)
