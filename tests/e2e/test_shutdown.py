"""Graceful shutdown; each test ends a shared server after that server's other tests (``ends_server``).

The default server (``configs/default.yaml``, the 30-second default grace): on SIGTERM, streams in flight finish, new
requests are refused, and the whole process tree exits. The first replica (``tests/configs/short-grace.yaml``):
requests still running when the grace ends are answered, never cut: a stream gets an error frame and ``[DONE]``, a
waiting request a 503.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import openai
import psutil
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.e2e.conftest import CHAT_MODEL
from tests.e2e.pool import ServerPool
from tests.e2e.probes import (
    endless_body,
    engine_running,
    envelope,
    error_frames,
    sse_payloads,
    wait_for,
)
from tests.e2e.server import Server, still_alive

CHAT = "/v1/chat/completions"
MESSAGES: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "Write a long story about a lighthouse keeper."}
]
# 24 tokens could end before a third stream had started (CI); 3 x 200 took 25 s here beside an idle server.
# 120 tokens overlap for seconds and end well inside the 30-second grace.
STREAM_TOKENS = 120


# --- SIGTERM lets streams finish (the default server, ended by this test) ----------------------------------


def short_stream_body() -> dict[str, Any]:
    return {
        "model": CHAT_MODEL,
        "messages": MESSAGES,
        "max_tokens": STREAM_TOKENS,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


@dataclass
class StreamRun:
    """One streamed request run in a thread: its SSE payloads, when it started and ended, what went wrong."""

    server: Server
    body: dict[str, Any] = field(default_factory=short_stream_body)
    first_chunk: threading.Event = field(default_factory=threading.Event)
    payloads: list[str] = field(default_factory=list)
    ended: float = 0
    failure: str | None = None

    def run(self) -> None:
        headers = {"Authorization": f"Bearer {self.server.api_key}"}
        body = self.body
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
    """How a new request is refused: ``503`` (draining), ``connection`` (no longer listening) or ``unanswered``
    (the worker has closed its listener, but circus's arbiter still holds the socket, so the kernel accepts the
    connection and nobody reads it); None if served."""
    headers = {"Authorization": f"Bearer {server.api_key}"}
    body = {"model": CHAT_MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
    try:
        response = httpx.post(f"{server.base_url}{CHAT}", json=body, headers=headers, timeout=5)
    except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError):
        return "connection"
    except httpx.ReadTimeout:
        return "unanswered"
    if response.status_code == 503:
        assert int(response.headers["retry-after"]) > 0
        envelope(response, 503)
        return "503"
    assert response.status_code == 200, response.text
    return None


def draining(server: Server) -> bool:
    try:
        return httpx.get(f"{server.base_url}/readyz", timeout=5).status_code == 503
    except httpx.TransportError:
        return True


def refused_after_drain(server: Server, timeout: float) -> str:
    """How a new request is refused once the worker drains (SIGTERM reaches it through the arbiter; a request that
    slips in before that is admitted, and the engine, signalled too, only runs it after its own drain)."""
    wait_for(lambda: draining(server), timeout, "readiness to drop after SIGTERM")
    how = refused(server)
    assert how is not None, "a new request was served while draining"
    return how


@pytest.fixture(scope="module")
def drain_server(pool: ServerPool) -> Server:
    return pool.get("default")  # the test ends it: the pool's stop then checks its log for the watchdog


def start_three_streams(server: Server) -> tuple[list[StreamRun], list[threading.Thread]]:
    """Three streams, returned once each has its first chunk (one may have ended by then on a busy machine)."""
    runs = [StreamRun(server) for _ in range(3)]
    threads = [threading.Thread(target=run.run, daemon=True) for run in runs]
    for thread in threads:
        thread.start()
    for run in runs:
        assert run.first_chunk.wait(60), "a stream did not start"
    return runs, threads


@pytest.mark.slow
@pytest.mark.ends_server
def test_sigterm_finishes_streams_refuses_new_requests_and_exits_clean(drain_server: Server) -> None:
    assert drain_server.process is not None
    processes = drain_server.tree()
    assert any("EngineCore" in process.name() for process in processes), processes
    for _attempt in range(3):
        runs, threads = start_three_streams(drain_server)
        if not any(run.ended for run in runs):
            break
        for thread in threads:  # one ended before the last began (servers booting beside took the CPU): again
            thread.join(60)
    sigterm = time.monotonic()
    drain_server.process.send_signal(signal.SIGTERM)
    how = refused_after_drain(drain_server, 15)
    for thread in threads:
        thread.join(60)
    problems = {index: problems for index, run in enumerate(runs) if (problems := run.problems())}
    streams_done = max(run.ended for run in runs) - sigterm
    in_flight = sum(run.ended > sigterm for run in runs)
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
    assert in_flight == 3, "a stream had finished before the SIGTERM: the test proved nothing"
    assert not leftovers, f"still running {exited:.0f} s after SIGTERM: {leftovers}"
    assert drain_server.stop() < 30


# --- the end of the grace (the first replica, ended by this test) ------------------------------------------


@pytest.fixture(scope="module")
def grace_server(pool: ServerPool) -> Server:
    return pool.get("replica-one")  # the test ends it: the pool's stop then returns at once


@dataclass
class WaitingRequest:
    """A non-streamed request that would generate for minutes, run in a thread: its answer or what went wrong."""

    server: Server
    response: httpx.Response | None = None
    failure: str | None = None
    ended: float = 0

    def run(self) -> None:
        headers = {"Authorization": f"Bearer {self.server.api_key}"}
        try:
            self.response = httpx.post(
                f"{self.server.base_url}{CHAT}", json=endless_body(CHAT_MODEL), headers=headers, timeout=60
            )
        except Exception as exc:
            self.failure = repr(exc)
        finally:
            self.ended = time.monotonic()


@dataclass
class SDKStreamRun:
    """An endless stream read with the official SDK in a thread: the error it raised, if any."""

    server: Server
    first_chunk: threading.Event = field(default_factory=threading.Event)
    error: Exception | None = None
    ended: float = 0

    def run(self) -> None:
        client = openai.OpenAI(
            base_url=f"{self.server.base_url}/v1", api_key=self.server.api_key, max_retries=0, timeout=60
        )
        try:
            stream = client.chat.completions.create(
                model=CHAT_MODEL, messages=MESSAGES, max_tokens=1500, stream=True, extra_body={"ignore_eos": True}
            )
            for _ in stream:
                self.first_chunk.set()
        except Exception as exc:
            self.error = exc
        finally:
            self.ended = time.monotonic()
            self.first_chunk.set()


def shutdown_frame(run: StreamRun) -> dict[str, Any]:
    """The error frame that ended a stream cut short by the end of the grace (after checking it ended cleanly)."""
    assert run.failure is None, f"the stream broke instead of ending with an error frame: {run.failure}"
    assert run.payloads[-1] == "[DONE]", run.payloads[-2:]
    errors = error_frames(run.payloads)
    assert len(errors) == 1 and "error" in json.loads(run.payloads[-2]), run.payloads[-3:]
    assert len(run.payloads) > 3, "the stream had started before the grace ended"
    return errors[0]


@pytest.mark.slow
@pytest.mark.ends_server
def test_when_the_grace_ends_streams_get_an_error_frame_and_waiting_requests_a_503(grace_server: Server) -> None:
    assert grace_server.process is not None
    processes = grace_server.tree()
    streams = [StreamRun(grace_server, body=endless_body(CHAT_MODEL, stream=True)) for _ in range(2)]
    sdk_stream, waiting = SDKStreamRun(grace_server), WaitingRequest(grace_server)
    runs: list[Callable[[], None]] = [*(run.run for run in streams), sdk_stream.run, waiting.run]
    threads = [threading.Thread(target=run, daemon=True) for run in runs]
    for thread in threads:
        thread.start()
    for started in (*(run.first_chunk for run in streams), sdk_stream.first_chunk):
        assert started.wait(60), "a stream did not start"
    wait_for(lambda: engine_running(grace_server.base_url, CHAT_MODEL) == 4, 30, "all four requests in the engine")
    sigterm = time.monotonic()
    grace_server.process.send_signal(signal.SIGTERM)
    for thread in threads:
        thread.join(60)
    _, alive = psutil.wait_procs(processes, timeout=60)
    leftovers = still_alive(alive)
    for process in leftovers:
        process.kill()
    frames = [shutdown_frame(run) for run in streams]
    print(
        f"\ngrace over: streams ended {max(run.ended for run in streams) - sigterm:.1f} s after SIGTERM with "
        f"{[frame['code'] for frame in frames]}, the waiting request got "
        f"{waiting.response.status_code if waiting.response is not None else waiting.failure}"
    )
    ends = [*(run.ended for run in streams), sdk_stream.ended, waiting.ended]
    assert min(ends) > sigterm, "a request ended before SIGTERM: the test proved nothing"
    for frame in frames:
        assert (frame["type"], frame["code"]) == ("server_error", "service_unavailable"), frame
        assert "shutting down" in frame["message"], frame
    assert isinstance(sdk_stream.error, openai.APIError), sdk_stream.error
    assert not isinstance(sdk_stream.error, openai.APIConnectionError), "the SDK's stream broke instead of ending"
    assert sdk_stream.error.code == "service_unavailable", sdk_stream.error
    assert waiting.response is not None, f"the waiting request was cut: {waiting.failure}"
    error = envelope(waiting.response, 503)
    assert (error["code"], int(waiting.response.headers["retry-after"]) > 0) == ("service_unavailable", True)
    assert not leftovers, f"still running after the shutdown: {leftovers}"
