"""Helpers for the reliability tests: the engine's own request count (read from ``/metrics``), bounded polling,
SSE frames read off the wire, OpenAI's error envelope and the resource figures of the server's process tree.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import httpx
import psutil
import pytest

from tests.e2e.server import Server

ENGINE_GAUGE = "bento_oai_engine_requests_running"


def server_log(server: Server) -> str:
    if not server.log_path.exists():
        pytest.skip("the server was started elsewhere (BENTO_OAI_E2E_PORT): its log is not ours to read")
    return server.log_path.read_text(errors="replace")


def engine_running(base_url: str, model: str) -> int:
    """The engine's own count of unfinished requests for ``model`` (not our layer's bookkeeping)."""
    return engine_running_in(httpx.get(f"{base_url}/metrics", timeout=30).text, model)


def engine_running_in(text: str, model: str) -> int:
    """The engine gauge for ``model`` in the text of a ``/metrics`` answer."""
    return gauge_in(text, ENGINE_GAUGE, model)


def gauge_in(text: str, name: str, model: str) -> int:
    """The gauge ``name`` for ``model`` in the text of a ``/metrics`` answer."""
    match = re.search(rf'^{name}{{model="{re.escape(model)}"}} (\S+)$', text, re.MULTILINE)
    assert match is not None, f"{name} for {model} missing from /metrics"
    return int(float(match.group(1)))


def requests_queued(base_url: str, model: str) -> int:
    """Requests waiting in our admission queue for ``model`` (``bento_oai_requests_queued``)."""
    return gauge_in(httpx.get(f"{base_url}/metrics", timeout=30).text, "bento_oai_requests_queued", model)


def wait_for(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.2) -> float:
    """Poll ``condition`` until it holds; return the seconds it took, or fail after ``timeout``."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not within {timeout:.0f} s: {what}")
        time.sleep(interval)
    return time.monotonic() - started


def wait_engine_idle(server: Server, model: str, timeout: float = 10) -> float:
    """Seconds until the engine has no unfinished request for ``model`` (fails beyond ``timeout``)."""
    return wait_for(lambda: engine_running(server.base_url, model) == 0, timeout, f"{model}'s engine idle")


def sse_payloads(lines: Iterable[str]) -> list[str]:
    """The ``data:`` payloads of an SSE stream, in order (comments and blank lines skipped)."""
    return [line.removeprefix("data:").strip() for line in lines if line.startswith("data:")]


def response_events(raw: str) -> list[dict[str, Any]]:
    """The events of a raw Responses stream, after checking its framing: ``event: <type>`` and ``data: <json>``
    of the same type, ``sequence_number`` 0, 1, 2, ..., and no ``[DONE]`` (keepalive comments are skipped)."""
    assert raw.endswith("\n\n") and "[DONE]" not in raw, raw[-300:]
    events = []
    for block in raw.split("\n\n")[:-1]:
        lines = [line for line in block.split("\n") if not line.startswith(":")]
        if not lines:
            continue
        assert len(lines) == 2 and lines[0].startswith("event: ") and lines[1].startswith("data: "), block
        event = json.loads(lines[1].removeprefix("data: "))
        assert event["type"] == lines[0].removeprefix("event: "), block
        events.append(event)
    assert [event["sequence_number"] for event in events] == list(range(len(events)))
    return events


def error_frames(payloads: list[str]) -> list[dict[str, Any]]:
    """The ``error`` objects of error frames among a stream's payloads."""
    events = [json.loads(payload) for payload in payloads if payload != "[DONE]"]
    return [event["error"] for event in events if "error" in event]


def envelope(response: httpx.Response, status: int) -> dict[str, Any]:
    """The ``error`` object of an OpenAI error response, after checking status, media type and shape."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert list(body) == ["error"], body
    error = body["error"]
    assert isinstance(error, dict) and set(error) == {"message", "type", "param", "code"}, error
    assert isinstance(error["message"], str) and error["message"]
    return error


@dataclass(frozen=True)
class TreeFigures:
    """Resource use of the server's whole process tree (arbiter, worker, engine processes)."""

    processes: int
    rss_mb: float
    threads: int
    fds: int

    def __str__(self) -> str:
        return f"{self.processes} processes, RSS {self.rss_mb:.0f} MB, {self.threads} threads, {self.fds} fds"


def tree_figures(server: Server) -> TreeFigures:
    rss, threads, fds, processes = 0, 0, 0, 0
    for process in server.tree():
        try:
            with process.oneshot():
                rss += process.memory_info().rss
                threads += process.num_threads()
                fds += process.num_fds()
            processes += 1
        except psutil.NoSuchProcess:
            continue
    return TreeFigures(processes=processes, rss_mb=rss / 2**20, threads=threads, fds=fds)


LONG_STORY = [{"role": "user", "content": "Write a long story about a lighthouse keeper."}]


def endless_body(model: str, **fields: Any) -> dict[str, Any]:
    """A chat request that would generate for minutes on this CPU: only a deadline or a shutdown ends it."""
    return {"model": model, "messages": LONG_STORY, "max_tokens": 1500, "ignore_eos": True, **fields}


ENDLESS_NUMBERS = {
    "type": "object",
    "properties": {"numbers": {"type": "array", "items": {"type": "integer"}, "minItems": 5000}},
    "required": ["numbers"],
}


def endless_response(**fields: Any) -> dict[str, Any]:
    """A ``/v1/responses`` body that generates its 1500 tokens (minutes on this CPU) unless stopped. The Responses
    API has no ``ignore_eos`` and greedy prompts end early: the grammar forbids ending before 5000 numbers."""
    fmt = {"type": "json_schema", "name": "numbers", "schema": ENDLESS_NUMBERS}
    return {"input": "List numbers.", "max_output_tokens": 1500, "text": {"format": fmt}, **fields}
