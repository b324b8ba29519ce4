"""Streaming throughput of ``/v1/responses`` against ``/v1/chat/completions`` on one running server, same load.

Both endpoints get ``loadgen``'s closed loop: the same prompts, ``max_tokens`` (``max_output_tokens`` for
responses), temperature 0 and ``ignore_eos`` through ``extra_body``, at each concurrency level. Rounds alternate
the order (chat first, then responses first, ...), so the machine's drift falls on both alike; each level's rate
is the median of its rounds, and the ratio is responses tok/s over chat tok/s (the goal is >= 0.97). Responses
are stored (the default ``store: true``): the store's writes are part of what is measured.

    .venv/bin/python -m benchmarks.responses --port 3000 --key "$OPENAI_API_KEY"
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import openai

from benchmarks.loadgen import LoadSpec, RequestSample, RunResult, Stats, one_request, summarize

Send = Callable[[openai.AsyncOpenAI, LoadSpec, str], Awaitable[RequestSample]]
TERMINAL = ("response.completed", "response.incomplete")


async def one_response(client: openai.AsyncOpenAI, spec: LoadSpec, prompt: str) -> RequestSample:
    """Stream one response and time it as ``loadgen.one_request`` times a chat completion: the first text delta
    is the first token, the gaps between text deltas the inter-token latencies, the usage from the last event."""
    started = time.perf_counter()
    sample = RequestSample(latency=0.0, started=started)
    deltas = 0
    last: float | None = None
    try:
        stream = await client.responses.create(
            model=spec.model,
            input=prompt,
            max_output_tokens=spec.max_tokens,
            temperature=0,
            stream=True,
            extra_body=spec.extra_body or None,
        )
        async with stream:
            event: Any
            async for event in stream:
                now = time.perf_counter()
                if event.type in TERMINAL and event.response.usage is not None:
                    sample.output_tokens = event.response.usage.output_tokens
                    sample.usage_reported = True
                elif event.type == "error":
                    raise RuntimeError(f"error event: {event.message}")
                if event.type != "response.output_text.delta" or not event.delta:
                    continue
                deltas += 1
                if last is None:
                    sample.ttft = now - started
                else:
                    sample.itls.append(now - last)
                last = now
    except Exception as exc:  # a benchmark counts failures rather than stopping at the first
        sample.error = f"{type(exc).__name__}: {str(exc)[:200]}"
    if not sample.usage_reported:
        sample.output_tokens = deltas
    sample.latency = time.perf_counter() - started
    return sample


async def one_chat(client: openai.AsyncOpenAI, spec: LoadSpec, prompt: str) -> RequestSample:
    return await one_request(client, spec, prompt)


ENDPOINTS: dict[str, Send] = {"chat": one_chat, "responses": one_response}


async def closed_loop(client: openai.AsyncOpenAI, spec: LoadSpec, send: Send) -> RunResult:
    """``loadgen.run_load`` with the request sender as a parameter."""
    prompts: Iterator[str] = itertools.cycle(spec.prompts)
    sent = itertools.count()
    samples: list[RequestSample] = []

    async def worker() -> None:
        while next(sent) < spec.requests:
            samples.append(await send(client, spec, next(prompts)))

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(min(spec.concurrency, spec.requests))))
    return RunResult(spec=spec, samples=samples, wall=time.perf_counter() - started)


@dataclass(frozen=True)
class Comparison:
    """One concurrency level: both endpoints' pooled stats and the ratio of their rates, pooled and per round."""

    concurrency: int
    chat: Stats
    responses: Stats
    ratios: tuple[float, ...]

    @property
    def ratio(self) -> float:
        return self.responses.output_tokens_per_s / self.chat.output_tokens_per_s


async def compare(
    client: openai.AsyncOpenAI, model: str, *, levels: Sequence[int], rounds: int, requests: int, max_tokens: int
) -> list[Comparison]:
    """``rounds`` rounds; in each, every level runs both endpoints back to back, in an order that alternates."""
    runs: dict[tuple[int, str], list[RunResult]] = {(level, name): [] for level in levels for name in ENDPOINTS}
    for round_index in range(rounds):
        order = list(ENDPOINTS) if round_index % 2 == 0 else list(ENDPOINTS)[::-1]
        for level in levels:
            spec = LoadSpec(model=model, concurrency=level, requests=max(requests, level), max_tokens=max_tokens)
            for name in order:
                runs[(level, name)].append(await closed_loop(client, spec, ENDPOINTS[name]))
    comparisons = []
    for level in levels:
        chat, responses = runs[(level, "chat")], runs[(level, "responses")]
        ratios = tuple(
            summarize([mine]).output_tokens_per_s / summarize([theirs]).output_tokens_per_s
            for mine, theirs in zip(responses, chat, strict=True)
        )
        comparisons.append(Comparison(level, summarize(chat), summarize(responses), ratios))
    return comparisons


def render(comparisons: Sequence[Comparison]) -> str:
    """A markdown table: per level, both rates, the ratio (and its rounds), tokens per request, TTFT and ITL."""
    lines = [
        "| concurrency | chat tok/s | responses tok/s | ratio | ratio by round | tokens/request chat, responses "
        "| TTFT p50 ms chat, responses | ITL p50 ms chat, responses | errors |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for c in comparisons:
        by_round = ", ".join(f"{ratio:.3f}" for ratio in c.ratios)
        lines.append(
            f"| {c.concurrency} | {c.chat.output_tokens_per_s:.1f} | {c.responses.output_tokens_per_s:.1f} "
            f"| {c.ratio:.3f} | {by_round} | {c.chat.tokens_per_request:.0f}, {c.responses.tokens_per_request:.0f} "
            f"| {c.chat.ttft_p50 * 1000:.0f}, {c.responses.ttft_p50 * 1000:.0f} "
            f"| {c.chat.itl_p50 * 1000:.1f}, {c.responses.itl_p50 * 1000:.1f} "
            f"| {c.chat.errors}, {c.responses.errors} |"
        )
    worst = min((c.ratio for c in comparisons), default=float("nan"))
    lines.append("")
    for c in comparisons:
        if abs(c.responses.tokens_per_request - c.chat.tokens_per_request) > 0.01 * c.chat.tokens_per_request:
            lines.append(
                f"Not the same load at c={c.concurrency}: {c.responses.tokens_per_request:.1f} tokens per response "
                f"against {c.chat.tokens_per_request:.1f} per chat completion (is ignore_eos honoured on both?)."
            )
    lines.append(
        f"Lowest ratio {worst:.3f} (goal >= 0.97); median of rounds' ratios per level: "
        + ", ".join(f"c={c.concurrency} {statistics.median(c.ratios):.3f}" for c in comparisons)
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--key", required=True, help="an API key the server accepts")
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--concurrency", default="1,16", help="comma-separated levels")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--requests", type=int, default=32, help="requests per run (at least the concurrency)")
    parser.add_argument("--max-tokens", type=int, default=128)
    args = parser.parse_args()
    client = openai.AsyncOpenAI(
        base_url=f"http://{args.host}:{args.port}/v1", api_key=args.key, max_retries=0, timeout=600
    )
    levels = [int(level) for level in args.concurrency.split(",")]
    comparisons = asyncio.run(
        compare(
            client, args.model, levels=levels, rounds=args.rounds, requests=args.requests, max_tokens=args.max_tokens
        )
    )
    print(render(comparisons))


if __name__ == "__main__":
    main()
