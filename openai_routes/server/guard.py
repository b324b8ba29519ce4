"""Per-request protection as one plain ASGI middleware: body size, client disconnect, draining on shutdown.

- The body is read here, counting bytes as they arrive (``Content-Length`` is not trusted): beyond the limit
  the answer is 413 at once. The app then gets the body replayed.
- A ``POST`` to a streamed path (``streamed``: a file upload, ``POST /v1/files``) is not read here: its body passes
  through to the app as it arrives, counted against that path's own cap. Beyond it, the app's next read raises the
  413 (an ``APIError``, answered by the app's handlers, or here if the app answered nothing); nothing of the body is
  in the scope, so admission leaves the request alone.
- This middleware alone listens for ``http.disconnect``; when the client goes away before the response is
  complete, the request's task is cancelled, and the cancellation reaches ``AsyncLLM.generate``, which
  aborts the request in the engine (streamed or not).
- While the server drains (SIGTERM), new requests get 503 with ``Retry-After``; in-flight ones may finish
  until the grace period ends. Then they are cancelled (which aborts their engine requests) and answered, never
  cut: a request whose response has not started gets the 503, a stream its own framing's error and end (chat's
  error frame and ``data: [DONE]``, the Responses API's numbered ``error`` event).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine, Mapping
from typing import Any

from starlette._utils import get_route_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from openai_routes.core.errors import APIError, service_unavailable, too_large
from openai_routes.server.sse import FRAMING_KEY

logger = logging.getLogger(__name__)

BODY_KEY = "bento_oai.body"  # the request body, for middlewares further in (admission reads the model)


def shutting_down() -> APIError:
    return service_unavailable("The server is shutting down. Retry later.")


class Drain:
    """The set of in-flight request tasks, and the shutdown switch; ``expired`` once the grace is over."""

    def __init__(self) -> None:
        self.tasks: set[asyncio.Task[None]] = set()
        self.draining = False
        self.expired = False

    def begin(self, grace: float) -> None:
        if self.draining:
            return
        self.draining = True
        logger.info("draining: %d request(s) in flight, grace %.0f s", len(self.tasks), grace)
        asyncio.get_running_loop().call_later(grace, self.cancel_all)

    def cancel_all(self) -> None:
        self.expired = True
        if self.tasks:
            logger.warning("grace period over: cancelling %d request(s)", len(self.tasks))
        for task in self.tasks:
            task.cancel()


class Progress:
    """How far the response has gone out: what a request cut short at shutdown can still be told."""

    def __init__(self, send: Send) -> None:
        self.send = send
        self.started = False
        self.complete = False

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
        elif message["type"] == "http.response.body" and not message.get("more_body", False):
            self.complete = True
        await self.send(message)

    async def end_with(self, error: APIError, scope: Scope, receive: Receive) -> None:
        """Answer ``error`` if nothing went out yet; end a started stream (every stream is a
        ``streaming.EventStream``, which leaves its framing in the scope) as its framing ends a failure."""
        if not self.started:
            await error.response()(scope, receive, self.send)
        elif not self.complete:
            framing = scope.get(FRAMING_KEY)
            body = framing.error(error) + framing.end if framing else b""
            await self.send({"type": "http.response.body", "body": body, "more_body": False})


class StreamedBody:
    """A streamed request's ``receive``: the body's messages as they come, counted against ``limit`` (413 beyond),
    then (the body whole) nothing until the client leaves. ``ended`` is set once the body is whole or the client
    left, ``disconnected`` when it left: mid-body, the read never returns (the guard cancels the app), so the app
    never takes a half body for a whole one."""

    def __init__(self, receive: Receive, limit: int) -> None:
        self.receive = receive
        self.limit = limit
        self.size = 0
        self.too_large = False
        self.ended = asyncio.Event()
        self.disconnected = asyncio.Event()

    async def __call__(self) -> Message:
        if self.too_large:
            raise too_large(self.limit)
        if self.ended.is_set():
            await self.disconnected.wait()
            return {"type": "http.disconnect"}
        message = await self.receive()
        if message["type"] == "http.disconnect":  # mid-body: the guard cancels the app, which reads no further
            self.disconnected.set()
            self.ended.set()
            await asyncio.get_running_loop().create_future()
        self.size += len(message.get("body", b""))
        if self.size > self.limit:
            self.too_large = True
            raise too_large(self.limit)
        if not message.get("more_body", False):
            self.ended.set()
        return message

    async def watch(self) -> None:
        """Once the body is whole, wait for the client to leave (before, ``__call__`` sees it)."""
        await self.ended.wait()
        if not self.disconnected.is_set():
            while (await self.receive())["type"] != "http.disconnect":
                pass
            self.disconnected.set()


class RequestGuard:
    def __init__(
        self, app: ASGIApp, max_body_bytes: int, drain: Drain, streamed: Mapping[str, int] | None = None
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.drain = drain
        self.streamed = dict(streamed or {})  # route path -> its body's cap, for POSTs

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.drain.draining:
            await shutting_down().response()(scope, receive, send)
            return
        limit = self.streamed.get(get_route_path(scope)) if scope["method"] == "POST" else None
        if limit is not None:
            await self.run_streamed(scope, StreamedBody(receive, limit), send)
            return
        body = await self.read_body(receive)
        if body is None:
            await too_large(self.max_body_bytes).response()(scope, receive, send)
            return
        scope[BODY_KEY] = body
        await self.run(scope, body, receive, send)

    async def read_body(self, receive: Receive) -> bytes | None:
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return b""
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def run_streamed(self, scope: Scope, body: StreamedBody, send: Send) -> None:
        progress = Progress(send)
        await self.supervise(scope, body, body.watch(), body.disconnected, progress)
        if body.too_large and not progress.started:  # the app let the 413 go unanswered
            await too_large(body.limit).response()(scope, body, progress)

    async def run(self, scope: Scope, body: bytes, receive: Receive, send: Send) -> None:
        disconnected = asyncio.Event()
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            await disconnected.wait()
            return {"type": "http.disconnect"}

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            disconnected.set()

        await self.supervise(scope, replay, watch(), disconnected, Progress(send))

    async def supervise(
        self,
        scope: Scope,
        receive: Receive,
        watch: Coroutine[Any, Any, None],
        disconnected: asyncio.Event,
        progress: Progress,
    ) -> None:
        """Run the app in a task of its own, cancelled when ``watch`` ends (the client left) or the grace ends."""

        async def call_app() -> None:
            await self.app(scope, receive, progress)

        app_task = asyncio.create_task(call_app())
        watcher = asyncio.create_task(watch)
        self.drain.tasks.add(app_task)
        try:
            await asyncio.wait({app_task, watcher}, return_when=asyncio.FIRST_COMPLETED)
            if not app_task.done():  # the client left: stop the work (aborts the engine request)
                app_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await app_task
            if app_task.cancelled() and self.drain.expired and not disconnected.is_set():
                await progress.end_with(shutting_down(), scope, receive)
        finally:
            self.drain.tasks.discard(app_task)
            for task in (app_task, watcher):
                task.cancel()
            await asyncio.gather(app_task, watcher, return_exceptions=True)
