"""Request ids and the access log, as a server-wide ASGI middleware.

Every response carries ``x-request-id`` (the client's if it sent one, else a new one). One access line per
request: id, method, path, status, model, tokens and latency. Never headers, keys, prompts or completions.
The routes fill in the model and token counts through ``core.context.current()``. A request that ends before any answer
started is a 500 if it raised, else its client went away: 499, as nginx logs it (not a server error to alert on),
and it still ends with a (dropped) 499 answer: BentoML holds an unanswered request until ``traffic.timeout``.
"""

from __future__ import annotations

import logging
import re
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from openai_routes.core.context import RequestContext, bind
from openai_routes.core.metrics import ServerMetrics

logger = logging.getLogger("bento_oai.access")

QUIET_PATHS = ("/livez", "/readyz", "/healthz", "/metrics")
CLIENT_GONE = 499
_CLIENT_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def request_id_from(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            client_id: str = value.decode("latin-1")
            if _CLIENT_ID.match(client_id):
                return client_id
    return f"req-{uuid.uuid4().hex}"


async def close_unanswered(send: Send) -> None:
    """End a request its client left before any answer (the server drops what it sends on a closed connection).
    BentoML's ``TimeoutMiddleware`` waits for a request's first message until ``traffic.timeout``: unanswered,
    the request's task and memory would stay that long, and a shutdown would wait for them."""
    await send({"type": "http.response.start", "status": CLIENT_GONE, "headers": []})
    await send({"type": "http.response.body", "body": b""})


class AccessLog:
    def __init__(self, app: ASGIApp, metrics: ServerMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        context = RequestContext(request_id_from(scope))
        token = bind(context)
        started = time.perf_counter()
        status = 0  # no answer started yet

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"]
                message = {**message, "headers": [*headers, (b"x-request-id", context.request_id.encode())]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            status = status or 500
            raise
        finally:
            token.var.reset(token)
            if not status:
                status = CLIENT_GONE
                await close_unanswered(send)
            self.record(scope, context, status, time.perf_counter() - started)

    def record(self, scope: Scope, context: RequestContext, status: int, elapsed: float) -> None:
        path = scope.get("path", "")
        if path.startswith(QUIET_PATHS):
            return
        if context.model:
            self.metrics.requests.labels(model=context.model, status=str(status)).inc()
            self.metrics.latency.labels(model=context.model, endpoint=path).observe(elapsed)
        logger.info(
            "request_id=%s method=%s path=%s status=%d model=%s prompt_tokens=%d completion_tokens=%d latency_ms=%.1f",
            context.request_id, scope.get("method", ""), path, status, context.model or "-",
            context.prompt_tokens, context.completion_tokens, elapsed * 1000,
        )  # fmt: skip
