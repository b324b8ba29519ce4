"""One batch line through the API in-process: the same ASGI app, middleware, validation and generation run as an
HTTP request to the batch's endpoint gets, with no socket and no HTTP parsing.

The line runs as the key that made the batch (``INTERNAL_OWNER``, which only in-process callers can set), under a
request id of its own (the output line's ``request_id``), at a lower engine priority than interactive requests
(``BATCH_PRIORITY``: vLLM runs it later when its config has ``scheduling_policy: priority``). Setting ``abort``
ends it as a client that leaves ends a request: the guard cancels it and its engine requests are aborted.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

from starlette.types import ASGIApp, Message

from openai_routes.core.context import RequestContext, bind
from openai_routes.server.auth import INTERNAL_OWNER

BATCH_PRIORITY = 1  # behind interactive requests (0) in an engine that schedules by priority


@dataclass(frozen=True)
class Answer:
    status: int  # 0: no answer (aborted before the response started)
    body: Any


async def call(app: ASGIApp, endpoint: str, body: dict[str, Any], owner: str, request_id: str,
               abort: asyncio.Event) -> Answer:  # fmt: skip
    path = endpoint.removeprefix("/v1")
    scope = {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"x-request-id", request_id.encode())],
        "client": None, "server": None, "state": {}, INTERNAL_OWNER: owner,
    }  # fmt: skip
    request = json.dumps(body).encode()
    sent = False
    status = 0
    chunks: list[bytes] = []

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": request, "more_body": False}
        await abort.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    token = bind(RequestContext(request_id, priority=BATCH_PRIORITY))
    try:
        await app(scope, receive, send)
    finally:
        token.var.reset(token)
    if not status:
        return Answer(0, None)
    try:
        return Answer(status, json.loads(b"".join(chunks)))
    except ValueError:
        return Answer(status, {"error": {"message": "The endpoint's answer was not JSON.", "type": "server_error"}})
