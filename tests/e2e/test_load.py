"""Load: 64 concurrent streaming clients against the real service, a tenth of them hanging up mid-stream.

Every client that stays gets a complete, well-formed stream (``finish_reason``, usage, ``[DONE]``, no error
frame); the ones that leave are aborted in the engine; afterwards the engine is idle and the server's process
tree is back near the resources it used before the load (RSS, threads, file descriptors).
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from dataclasses import dataclass, field

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionChunk

from tests.e2e.conftest import CHAT_MODEL
from tests.e2e.probes import TreeFigures, error_frames, server_log, tree_figures, wait_engine_idle
from tests.e2e.server import Server

pytestmark = pytest.mark.slow

CLIENTS = 64
DISCONNECTS = CLIENTS // 10  # every tenth client hangs up after a few chunks
TOKENS = 64
CHAT = "/v1/chat/completions"
# Back near the baseline: the allocator keeps some of what the load used, and thread pools may grow a little.
RSS_SLACK_MB = 300
THREAD_SLACK = 16
FD_SLACK = 16


@dataclass
class ClientRun:
    index: int
    disconnects: bool
    payloads: list[str] = field(default_factory=list)
    first_chunk: float | None = None
    seconds: float = 0
    error: str | None = None

    def problems(self) -> list[str]:
        """What is wrong with a stream that ran to its end (an empty list when nothing is)."""
        if self.error is not None:
            return [self.error]
        if not self.payloads or self.payloads[-1] != "[DONE]":
            return [f"no [DONE] (last: {self.payloads[-1:]})"]
        if errors := error_frames(self.payloads):
            return [f"error frames {errors}"]
        chunks = [ChatCompletionChunk.model_validate(json.loads(payload)) for payload in self.payloads[:-1]]
        problems = []
        if len({chunk.id for chunk in chunks}) != 1:
            problems.append("chunk ids differ")
        if chunks[0].choices[0].delta.role != "assistant":
            problems.append("first delta has no assistant role")
        finishes = [choice.finish_reason for chunk in chunks for choice in chunk.choices if choice.finish_reason]
        if finishes != ["length"]:
            problems.append(f"finish reasons {finishes}")
        text = "".join(choice.delta.content or "" for chunk in chunks for choice in chunk.choices)
        if not text:
            problems.append("no content")
        usage = chunks[-1].usage
        if chunks[-1].choices or usage is None or usage.completion_tokens != TOKENS:
            problems.append(f"usage chunk wrong: {chunks[-1]}")
        return problems


async def stream_client(session: httpx.AsyncClient, run: ClientRun) -> None:
    body = {
        "model": CHAT_MODEL,
        "messages": [{"role": "user", "content": f"Client {run.index}: tell me about the sea."}],
        "max_tokens": 1500 if run.disconnects else TOKENS,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    started = time.monotonic()
    try:
        async with session.stream("POST", CHAT, json=body) as response:
            if response.status_code != 200:
                run.error = f"HTTP {response.status_code}: {(await response.aread())[:300]!r}"
                return
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                run.payloads.append(line.removeprefix("data:").strip())
                run.first_chunk = run.first_chunk or time.monotonic() - started
                if run.disconnects and len(run.payloads) >= 3:
                    return  # leaving the block closes the connection mid-stream
    except httpx.HTTPError as exc:
        run.error = repr(exc)
    finally:
        run.seconds = time.monotonic() - started


async def run_load(server: Server) -> list[ClientRun]:
    runs = [ClientRun(index, disconnects=index % 10 == 5) for index in range(CLIENTS)]
    assert sum(run.disconnects for run in runs) == DISCONNECTS
    pool = httpx.Limits(max_connections=CLIENTS * 2, max_keepalive_connections=CLIENTS * 2)
    headers = {"Authorization": f"Bearer {server.api_key}"}
    timeout = httpx.Timeout(300, connect=60)
    async with httpx.AsyncClient(base_url=server.base_url, headers=headers, timeout=timeout, limits=pool) as session:
        await asyncio.wait_for(asyncio.gather(*(stream_client(session, run) for run in runs)), timeout=900)
    return runs


def near_baseline(now: TreeFigures, baseline: TreeFigures) -> bool:
    return (
        now.processes == baseline.processes
        and now.rss_mb <= baseline.rss_mb + RSS_SLACK_MB
        and now.threads <= baseline.threads + THREAD_SLACK
        and now.fds <= baseline.fds + FD_SLACK
    )


def settle(server: Server, baseline: TreeFigures, timeout: float) -> tuple[TreeFigures, float]:
    """The tree's figures once they are back near ``baseline``, or as they are after ``timeout``."""
    started = time.monotonic()
    while not near_baseline(now := tree_figures(server), baseline) and time.monotonic() - started < timeout:
        time.sleep(1)
    return now, time.monotonic() - started


@pytest.mark.stress
async def test_64_streaming_clients_with_disconnects(server: Server, client: openai.OpenAI) -> None:
    if not server.tree():
        pytest.skip("the server was started elsewhere (BENTO_OAI_E2E_PORT): its processes are not ours to measure")
    client.chat.completions.create(model=CHAT_MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=8)
    wait_engine_idle(server, CHAT_MODEL, timeout=60)
    baseline = tree_figures(server)

    started = time.monotonic()
    runs = await run_load(server)
    wall = time.monotonic() - started
    idle = wait_engine_idle(server, CHAT_MODEL, timeout=30)
    after, settled = settle(server, baseline, timeout=60)

    stayed = [run for run in runs if not run.disconnects]
    left = [run for run in runs if run.disconnects]
    failed = {run.index: problems for run in stayed if (problems := run.problems())}
    failed |= {
        run.index: [run.error or f"left after {len(run.payloads)} events, not 3"]
        for run in left
        if run.error or len(run.payloads) < 3
    }
    durations = sorted(run.seconds for run in stayed)
    first_chunks = [run.first_chunk for run in stayed if run.first_chunk is not None]
    print(
        f"\nload: {CLIENTS} clients, {len(left)} disconnected mid-stream, {len(stayed) - len(failed)} completed, "
        f"{len(failed)} errors; wall {wall:.1f} s; per stream median {statistics.median(durations):.1f} s, "
        f"max {durations[-1]:.1f} s; first chunk median {statistics.median(first_chunks):.1f} s; "
        f"{len(stayed) * TOKENS / wall:.0f} tokens/s delivered; engine idle {idle:.1f} s after the last client\n"
        f"load: before {baseline}\nload: after  {after} (settled in {settled:.0f} s)"
    )
    assert not failed, failed
    assert near_baseline(after, baseline), f"resources not back near the baseline: {baseline} -> {after}"


def test_startup_heap_is_frozen_out_of_garbage_collection(server: Server) -> None:
    """Full collections would otherwise walk the millions of objects startup left (torch, vLLM, tokenizers),
    stalling every stream at once under load."""
    froze = [line for line in server_log(server).splitlines() if " startup objects out of garbage collection" in line]
    assert len(froze) == 1, froze
    assert int(froze[0].split("froze ")[1].split()[0]) > 100_000
