"""Request deadlines and graceful shutdown, on a server with a 4-second deadline and a 20-second grace.

``tests/configs/short-deadline.yaml``: a request still generating after 4 s is aborted in the engine and answered
504 (``code: timeout``), or ends with an error frame when streamed. On SIGTERM, streams in flight finish, new
requests are refused, and the whole process tree exits. The SIGTERM test ends the module's server: it runs last.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import openai
import psutil
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.e2e.conftest import CHAT_MODEL
from tests.e2e.probes import envelope, error_frames, own_server, sse_payloads, wait_engine_idle
from tests.e2e.server import Server, still_alive

DEADLINE_CONFIG = "tests/configs/short-deadline.yaml"
DEADLINE = 4.0
CHAT = "/v1/chat/completions"
MESSAGES: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "Write a long story about a lighthouse keeper."}
]
STREAM_TOKENS = 40  # a second or two here: well within the 4-second deadline


@pytest.fixture(scope="module")
def deadline_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with own_server(DEADLINE_CONFIG, tmp_path_factory.mktemp("short-deadline")) as server:
        yield server  # the SIGTERM test ends it: stopping it again returns at once


@pytest.fixture(scope="module")
def deadline_http(deadline_server: Server) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {deadline_server.api_key}"}
    with httpx.Client(base_url=deadline_server.base_url, headers=headers, timeout=120) as session:
        yield session


def endless_body(**fields: Any) -> dict[str, Any]:
    """A request that would generate for minutes on this CPU: only the deadline ends it."""
    return {"model": CHAT_MODEL, "messages": MESSAGES, "max_tokens": 1500, "ignore_eos": True, **fields}


# --- deadlines -----------------------------------------------------------------------------------------------


def test_deadline_answers_504_and_aborts_the_engine_request(
    deadline_server: Server, deadline_http: httpx.Client
) -> None:
    started = time.monotonic()
    response = deadline_http.post(CHAT, json=endless_body())
    elapsed = time.monotonic() - started
    error = envelope(response, 504)
    assert error["type"] == "server_error" and error["code"] == "timeout"
    idle = wait_engine_idle(deadline_server, CHAT_MODEL, timeout=10)
    print(f"\ndeadline: 504 after {elapsed:.1f} s, engine idle {idle:.1f} s later")
    assert DEADLINE - 0.5 <= elapsed < DEADLINE + 15


def test_deadline_ends_a_stream_with_an_error_frame_then_done(
    deadline_server: Server, deadline_http: httpx.Client
) -> None:
    started = time.monotonic()
    with deadline_http.stream("POST", CHAT, json=endless_body(stream=True)) as response:
        assert response.status_code == 200
        payloads = sse_payloads(response.iter_lines())
    elapsed = time.monotonic() - started
    assert payloads[-1] == "[DONE]"
    errors = error_frames(payloads)
    assert len(errors) == 1 and errors[0]["code"] == "timeout", errors
    assert "error" in json.loads(payloads[-2]), "the error frame is the last event before [DONE]"
    assert len(payloads) > 3, "the stream had started before the deadline"
    idle = wait_engine_idle(deadline_server, CHAT_MODEL, timeout=10)
    print(f"\ndeadline: stream ended with an error frame after {elapsed:.1f} s, engine idle {idle:.1f} s later")
    assert DEADLINE - 0.5 <= elapsed < DEADLINE + 15


def test_deadline_raises_api_error_from_the_sdk_stream(deadline_server: Server) -> None:
    client = openai.OpenAI(
        base_url=f"{deadline_server.base_url}/v1", api_key=deadline_server.api_key, max_retries=0, timeout=60
    )
    stream = client.chat.completions.create(
        model=CHAT_MODEL, messages=MESSAGES, max_tokens=1500, stream=True, extra_body={"ignore_eos": True}
    )
    with pytest.raises(openai.APIError) as info:
        for _ in stream:
            pass
    assert not isinstance(info.value, openai.APIConnectionError)
    assert info.value.code == "timeout"
    wait_engine_idle(deadline_server, CHAT_MODEL, timeout=10)


# --- graceful shutdown (last: it ends the server) ------------------------------------------------------------


@dataclass
class StreamRun:
    """One streamed request run in a thread: its SSE payloads, when it started and ended, what went wrong."""

    server: Server
    first_chunk: threading.Event = field(default_factory=threading.Event)
    payloads: list[str] = field(default_factory=list)
    ended: float = 0
    failure: str | None = None

    def run(self) -> None:
        body = {
            "model": CHAT_MODEL,
            "messages": MESSAGES,
            "max_tokens": STREAM_TOKENS,
            "ignore_eos": True,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        headers = {"Authorization": f"Bearer {self.server.api_key}"}
        try:
            with httpx.stream("POST", f"{self.server.base_url}{CHAT}", json=body, headers=headers, timeout=60) as r:
                assert r.status_code == 200, r.read()
                for line in r.iter_lines():
                    self.payloads += sse_payloads([line])
                    if self.payloads:
                        self.first_chunk.set()
        except Exception as exc:
            self.failure = repr(exc)
        finally:
            self.ended = time.monotonic()
            self.first_chunk.set()

    def problems(self) -> list[str]:
        """What is wrong with this stream (an empty list when it ran to its end as it should)."""
        if self.failure is not None:
            return [self.failure]
        if not self.payloads or self.payloads[-1] != "[DONE]":
            return [f"no [DONE]: {self.payloads[-2:]}"]
        if errors := error_frames(self.payloads):
            return [f"error frames {errors}"]
        chunks = [json.loads(payload) for payload in self.payloads[:-1]]
        finishes = [
            choice["finish_reason"] for chunk in chunks for choice in chunk["choices"] if choice["finish_reason"]
        ]
        tokens = (chunks[-1].get("usage") or {}).get("completion_tokens")
        if finishes != ["length"] or tokens != STREAM_TOKENS:
            return [f"finish_reason {finishes} after {tokens} of {STREAM_TOKENS} tokens"]
        return []


def refused(server: Server) -> str | None:
    """How a new request is refused: ``503`` (draining) or ``connection`` (no longer listening); None if served."""
    headers = {"Authorization": f"Bearer {server.api_key}"}
    body = {"model": CHAT_MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
    try:
        response = httpx.post(f"{server.base_url}{CHAT}", json=body, headers=headers, timeout=10)
    except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError):
        return "connection"
    if response.status_code == 503:
        assert int(response.headers["retry-after"]) > 0
        envelope(response, 503)
        return "503"
    assert response.status_code == 200, response.text
    return None


def refused_within(server: Server, timeout: float) -> str:
    """Send new requests until one is refused (SIGTERM reaches the worker through the arbiter)."""
    started = time.monotonic()
    while (how := refused(server)) is None:
        assert time.monotonic() - started < timeout, "new requests still served after SIGTERM"
        time.sleep(0.2)
    return how


@pytest.mark.slow
def test_sigterm_finishes_streams_refuses_new_requests_and_exits_clean(deadline_server: Server) -> None:
    assert deadline_server.process is not None
    processes = deadline_server.tree()
    assert any("EngineCore" in process.name() for process in processes), processes
    runs = [StreamRun(deadline_server) for _ in range(3)]
    threads = [threading.Thread(target=run.run, daemon=True) for run in runs]
    for thread in threads:
        thread.start()
    for run in runs:
        assert run.first_chunk.wait(60), "a stream did not start"
    sigterm = time.monotonic()
    deadline_server.process.send_signal(signal.SIGTERM)
    how = refused_within(deadline_server, 15)
    for thread in threads:
        thread.join(60)
    problems = {index: problems for index, run in enumerate(runs) if (problems := run.problems())}
    streams_done = max(run.ended for run in runs) - sigterm
    in_flight = sum(run.ended > sigterm for run in runs)  # a slow start can let one finish before the signal
    _, alive = psutil.wait_procs(processes, timeout=60)
    exited = time.monotonic() - sigterm
    leftovers = still_alive(alive)
    for process in leftovers:
        process.kill()
    print(
        f"\nshutdown: {in_flight} of 3 streams in flight at SIGTERM, ended {streams_done:.1f} s after it "
        f"({len(problems)} cut short); new request "
        f"refused ({how}); whole tree ({len(processes)} processes) gone {exited:.1f} s after SIGTERM"
    )
    assert not problems, f"streams in flight at SIGTERM did not complete: {problems}"
    assert in_flight >= 2, "the streams had finished before the SIGTERM: the test proved nothing"
    assert not leftovers, f"still running {exited:.0f} s after SIGTERM: {leftovers}"
    assert deadline_server.stop() < 30
