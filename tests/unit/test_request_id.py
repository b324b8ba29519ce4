"""The request id of a 500 is the request's own: the one in its ``x-request-id`` header and its access line.

No request through the real service is known to fail with a 500 on purpose, so this drives the real ASGI stack
the service runs (``access.AccessLog`` around ``create_app``) with a scripted engine that raises.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator

import httpx
import prometheus_client
import pytest

from openai_routes.core.metrics import ServerMetrics
from openai_routes.server.access_log import AccessLog
from openai_routes.server.auth import KeyRing
from tests.unit.fakes import CHAT_MODEL, FakeEmbedEngine, FakeGenerateEngine, build_app, fake_registry

KEY = "sk-unit-test-key"
CHAT = {"model": CHAT_MODEL, "messages": [{"role": "user", "content": "Hi"}]}


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    generator = FakeGenerateEngine(error=RuntimeError("boom at /srv/secret.py:1"), error_after=1)
    keyring = KeyRing()
    keyring.set_keys([KEY])
    app = build_app(fake_registry(generator, FakeEmbedEngine()), keyring)
    stack = AccessLog(app, ServerMetrics.for_registry(prometheus_client.CollectorRegistry()))
    transport = httpx.ASGITransport(stack, raise_app_exceptions=False)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://t", headers={"Authorization": f"Bearer {KEY}"}
    ) as c:
        yield c


def message_id(message: str) -> str:
    match = re.fullmatch(r"The server had an internal error \(request id (\S+)\)\.", message)
    assert match is not None, message
    return match.group(1)


def access_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == "bento_oai.access"]


async def test_500_body_names_the_request_id_of_the_header_and_access_line(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        response = await client.post("/chat/completions", json=CHAT)
    assert response.status_code == 500
    request_id = message_id(response.json()["error"]["message"])
    assert request_id == response.headers["x-request-id"]
    [line] = access_lines(caplog)
    assert f"request_id={request_id} " in line and " status=500 " in line


async def test_500_uses_the_client_request_id(client: httpx.AsyncClient) -> None:
    response = await client.post("/chat/completions", json=CHAT, headers={"x-request-id": "trace-42"})
    assert message_id(response.json()["error"]["message"]) == "trace-42" == response.headers["x-request-id"]


async def test_error_frame_names_the_request_id(client: httpx.AsyncClient) -> None:
    response = await client.post("/chat/completions", json={**CHAT, "stream": True})
    frames = [line.removeprefix("data: ") for line in response.text.split("\n\n") if line.startswith("data: {")]
    errors = [frame for frame in frames if frame.startswith('{"error"')]
    assert len(errors) == 1, response.text
    assert message_id(json.loads(errors[0])["error"]["message"]) == response.headers["x-request-id"]
