"""The status the access log and ``bento_oai_requests`` record for a request that ends before any answer started:
a client that went away is 499 (as nginx logs it), a failure is 500. Such a request still ends under BentoML's
own ``TimeoutMiddleware`` (the service's stack), which otherwise holds it until ``traffic.timeout``."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import pytest
from bentoml._internal.server.http.traffic import TimeoutMiddleware
from prometheus_client import CollectorRegistry
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from openai_routes.core.context import current
from openai_routes.core.metrics import ServerMetrics
from openai_routes.server.access_log import AccessLog

SCOPE: Scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": []}


async def gone(scope: Scope, receive: Receive, send: Send) -> None:
    """A route that found its client disconnected and stopped without answering."""


async def cancelled(scope: Scope, receive: Receive, send: Send) -> None:
    raise asyncio.CancelledError


async def failed(scope: Scope, receive: Receive, send: Send) -> None:
    raise RuntimeError("boom")


async def answered(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


async def receive_disconnect() -> dict[str, object]:
    return {"type": "http.disconnect"}


async def run(app: ASGIApp, registry: CollectorRegistry) -> list[Message]:
    """Run ``app`` (for model ``m``) under the access log and BentoML's hour-long timeout, counting in
    ``registry``; return what it sent. It must end at once, not when BentoML's timeout fires. (A failure is
    answered by ``envelope.OpenAIErrorEnvelope``, inside the access log: here it only has to be counted.)"""
    sent: list[Message] = []

    async def for_model(scope: Scope, receive: Receive, send: Send) -> None:
        current().model = "m"
        await app(scope, receive, send)

    async def send(message: Message) -> None:
        sent.append(message)

    logged = AccessLog(for_model, ServerMetrics.for_registry(registry))
    stack = logged if app is failed else TimeoutMiddleware(logged, timeout=3600)
    await asyncio.wait_for(stack(dict(SCOPE), receive_disconnect, send), timeout=10)
    return sent


@pytest.mark.parametrize(
    ("app", "raises", "status"),
    [(gone, None, 499), (cancelled, asyncio.CancelledError, 499), (failed, RuntimeError, 500), (answered, None, 200)],
    ids=["gone", "cancelled", "failed", "answered"],
)
async def test_the_status_recorded_for_a_request(
    app: ASGIApp, raises: type[BaseException] | None, status: int, caplog: pytest.LogCaptureFixture
) -> None:
    registry = CollectorRegistry()
    with caplog.at_level(logging.INFO), pytest.raises(raises) if raises else contextlib.nullcontext():
        sent = await run(app, registry)
        assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == status
    [line] = [record.getMessage() for record in caplog.records if record.name == "bento_oai.access"]
    assert f" status={status} " in line
    assert registry.get_sample_value("bento_oai_requests_total", {"model": "m", "status": str(status)}) == 1
