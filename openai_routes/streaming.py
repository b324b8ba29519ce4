"""Server-sent events: frames ``data: <json>\\n\\n``, ends with ``data: [DONE]``, and reports a failure that
happens after the headers went out as an error frame (the SDK raises ``APIError`` from it).

Errors found before the first byte are plain HTTP errors: routers get the engine's first step
(``generation.Generation.start``) before building the response, so engine admission errors surface first.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator

from pydantic import BaseModel
from starlette.responses import StreamingResponse

from openai_routes.errors import as_api_error

DONE = b"data: [DONE]\n\n"
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def frame(event: BaseModel) -> bytes:
    return b"data: " + event.model_dump_json().encode() + b"\n\n"


async def sse_frames(events: AsyncGenerator[BaseModel, None]) -> AsyncIterator[bytes]:
    try:
        async for event in events:
            yield frame(event)
    except Exception as exc:  # every failure after the headers becomes an error frame
        yield b"data: " + json.dumps(as_api_error(exc).body()).encode() + b"\n\n"
    finally:
        await events.aclose()  # a response stopped early must not leave the engine request running
    yield DONE


def sse_response(events: AsyncGenerator[BaseModel, None]) -> StreamingResponse:
    return StreamingResponse(sse_frames(events), media_type="text/event-stream", headers=HEADERS)
