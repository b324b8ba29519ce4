"""What the server writes down and what it lets browsers do: keys, prompts and completions never reach the log
(a random canary prompt and a random wrong key are searched for in everything the server printed); each request
has one access line under its ``x-request-id``; CORS is off unless configured.
"""

from __future__ import annotations

import secrets
import time

import httpx

from tests.e2e.conftest import CHAT_MODEL
from tests.e2e.probes import server_log
from tests.e2e.server import Server

CHAT = "/v1/chat/completions"


def access_line(server: Server, request_id: str, timeout: float = 15) -> str:
    """The access log line of ``request_id`` (polled: the worker writes it after the response went out)."""
    started = time.monotonic()
    while True:
        lines = [line for line in server_log(server).splitlines() if f"request_id={request_id} " in line]
        if lines:
            assert len(lines) == 1, lines
            return lines[0]
        assert time.monotonic() - started < timeout, f"no access line for {request_id}"
        time.sleep(0.2)


def test_canary_prompt_completion_and_keys_never_reach_the_log(server: Server, http: httpx.Client) -> None:
    server_log(server)
    canary = f"canary-{secrets.token_hex(12)}"
    wrong_key = f"sk-wrong-{secrets.token_hex(16)}"
    messages = [{"role": "user", "content": f"Repeat this word exactly: {canary}"}]
    reply = http.post(CHAT, json={"model": CHAT_MODEL, "messages": messages, "max_tokens": 24, "temperature": 0})
    assert reply.status_code == 200
    completion = reply.json()["choices"][0]["message"]["content"]
    with http.stream(
        "POST", CHAT, json={"model": CHAT_MODEL, "messages": messages, "max_tokens": 8, "stream": True}
    ) as r:
        assert r.status_code == 200
        streamed_id = r.headers["x-request-id"]
        r.read()
    invalid = http.post(
        CHAT, json={"model": CHAT_MODEL, "messages": messages, "temperature": 7}
    )  # a 400 echoes nothing
    assert invalid.status_code == 400 and canary not in invalid.text
    refused = httpx.post(
        f"{server.base_url}{CHAT}",
        headers={"Authorization": f"Bearer {wrong_key}"},
        json={"model": CHAT_MODEL, "messages": messages},
        timeout=60,
    )
    assert refused.status_code == 401 and wrong_key not in refused.text

    line = access_line(server, reply.headers["x-request-id"])
    for field in ("method=POST", f"path={CHAT}", "status=200", f"model={CHAT_MODEL}", "completion_tokens="):
        assert field in line, line
    assert "status=200" in access_line(server, streamed_id)
    assert "status=400" in access_line(server, invalid.headers["x-request-id"])
    assert "status=401" in access_line(server, refused.headers["x-request-id"])

    log = server_log(server)
    assert canary not in log, "the prompt reached the log"
    assert wrong_key not in log, "a presented key reached the log"
    assert server.api_key not in log, "the server's key reached the log"
    if len(completion.strip()) >= 16:  # long enough not to occur in the log by chance
        assert completion.strip() not in log, "the completion reached the log"


def test_client_request_id_round_trips_and_bad_ones_are_replaced(server: Server, http: httpx.Client) -> None:
    client_id = f"client-{secrets.token_hex(8)}"
    response = http.post(
        CHAT,
        headers={"x-request-id": client_id},
        json={"model": CHAT_MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2},
    )
    assert response.status_code == 200
    assert response.headers["x-request-id"] == client_id
    assert f"path={CHAT}" in access_line(server, client_id)
    for bad in ("has spaces and ; semicolons", "x" * 200, "line\tbreak"):
        replaced = http.get("/v1/models", headers={"x-request-id": bad}).headers["x-request-id"]
        assert replaced != bad and replaced.startswith("req-")
    generated = http.get("/v1/models").headers["x-request-id"]
    assert generated.startswith("req-") and generated != http.get("/v1/models").headers["x-request-id"]


def test_cors_is_off_by_default(server: Server, http: httpx.Client) -> None:
    origin = "https://evil.example"
    preflight = httpx.options(
        f"{server.base_url}{CHAT}",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
        timeout=60,
    )
    simple = http.get("/v1/models", headers={"Origin": origin})
    assert simple.status_code == 200
    for response in (preflight, simple):
        granted = {name for name in response.headers if name.lower().startswith("access-control-")}
        assert not granted, f"{response.request.method} answered with CORS headers {granted}"
