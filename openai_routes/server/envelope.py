"""Server-wide ASGI middleware that turns BentoML's plain-text 404/405 answers into OpenAI's error envelope.

Unknown paths (``/v1/nope`` included) never reach the mounted FastAPI app: BentoML's router answers them
itself with ``text/plain``. The service installs this middleware with ``add_asgi_middleware`` so that every
error a client can see has OpenAI's shape.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from openai_routes.core.errors import APIError

_REWRITTEN = {404: "not_found", 405: "method_not_allowed"}


class OpenAIErrorEnvelope:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rewriting = False

        async def send_wrapper(message: Message) -> None:
            nonlocal rewriting
            if message["type"] == "http.response.start":
                status = message["status"]
                content_type = dict(message.get("headers", [])).get(b"content-type", b"")
                if status in _REWRITTEN and not content_type.startswith(b"application/json"):
                    rewriting = True
                    path = scope.get("path", "")
                    what = "Unknown route" if status == 404 else "Method not allowed"
                    error = APIError(status, f"{what}: {scope.get('method', '')} {path}", code=_REWRITTEN[status])
                    response = error.response()
                    await send({"type": "http.response.start", "status": status, "headers": response.raw_headers})
                    await send({"type": "http.response.body", "body": response.body})
                    return
            if rewriting:
                return  # swallow the original body
            await send(message)

        await self.app(scope, receive, send_wrapper)
