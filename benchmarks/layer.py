"""The API layer's own CPU per streamed token: our ASGI app (plus the service's request-id/access-log and error
envelope middlewares) driven in-process with a scripted engine, no HTTP server and no model.

What it leaves out (uvicorn, the socket, BentoML's middlewares, the engine) is the same for every change to our
code, so this isolates what our routes cost per token. ``make bench`` compares whole servers; this is for
finding and checking per-token costs (``benchmarks/README.md``).

Usage: ``python -m benchmarks.layer [--tokens 256] [--requests 40] [--repeats 5]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import prometheus_client
from starlette.types import ASGIApp, Message

from openai_routes.core.limits import Limits
from openai_routes.core.metrics import ServerMetrics
from openai_routes.server.access_log import AccessLog
from openai_routes.server.auth import KeyRing
from openai_routes.server.envelope import OpenAIErrorEnvelope
from tests.unit.fakes import CHAT_MODEL, FakeEmbedEngine, FakeGenerateEngine, build_app, fake_registry, http_scope

KEY = "sk-layer-bench"


def streaming_app(tokens: int) -> ASGIApp:
    """The service's stack around the OpenAI app, on an engine that streams ``tokens`` one-token steps."""
    keyring = KeyRing()
    keyring.set_keys([KEY])
    engine = FakeGenerateEngine(reply=lambda _prompt, _choice: [" tok"] * tokens, context=tokens + 64)
    app = build_app(fake_registry(engine, FakeEmbedEngine()), keyring, Limits())
    return AccessLog(
        OpenAIErrorEnvelope(app), metrics=ServerMetrics.for_registry(prometheus_client.CollectorRegistry())
    )


async def stream_once(app: ASGIApp, body: bytes) -> int:
    """One streamed chat completion; returns the number of body messages the app sent."""
    delivered = False
    messages = 0

    async def receive() -> Message:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # the client never leaves
        raise AssertionError("unreachable")

    async def send(message: Message) -> None:
        nonlocal messages
        if message["type"] == "http.response.body":
            messages += 1
        elif message["type"] == "http.response.start" and message["status"] != 200:
            raise RuntimeError(f"the app answered {message['status']}")

    await app(http_scope("/chat/completions", KEY), receive, send)
    return messages


async def measure(tokens: int, requests: int, repeats: int) -> float:
    """Best-of-``repeats`` process CPU per token, in microseconds, over ``requests`` sequential streams."""
    app = streaming_app(tokens)
    body = json.dumps(
        {
            "model": CHAT_MODEL,
            "messages": [{"role": "user", "content": "hi"}],
            "stream": True,
            "max_tokens": tokens,
            "stream_options": {"include_usage": True},
        }
    ).encode()
    await stream_once(app, body)  # warm-up: imports, caches
    best = float("inf")
    for _ in range(repeats):
        started = time.process_time()
        for _ in range(requests):
            # one chunk per token, plus the usage chunk and [DONE] (and the final empty body)
            if (sent := await stream_once(app, body)) < tokens:
                raise RuntimeError(f"expected a chunk per token, got {sent} messages")
        best = min(best, (time.process_time() - started) / (requests * tokens))
    return best * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=256, help="tokens per streamed response")
    parser.add_argument("--requests", type=int, default=40, help="requests per repeat")
    parser.add_argument("--repeats", type=int, default=5, help="best of this many repeats")
    args = parser.parse_args()
    micros = asyncio.run(measure(args.tokens, args.requests, args.repeats))
    print(f"API layer: {micros:.2f} us of CPU per streamed token ({args.tokens} tokens x {args.requests} requests)")


if __name__ == "__main__":
    main()
