"""Closed-loop load generator for OpenAI-compatible chat servers, on the official ``openai`` SDK.

``concurrency`` workers each send one streaming chat completion (``stream_options.include_usage``) at a time
until ``requests`` have been sent, cycling through a fixed prompt set at a fixed ``max_tokens``. Per request
it records when it started, the time to first token (first chunk with content), the gaps between content
chunks (inter-token latency), end-to-end latency, output tokens (from the usage chunk; counted chunks when a
server sends none) and any error. ``summarize`` turns one or more runs into the numbers the report prints.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import statistics
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import openai

# Fixed, open-ended prompts: a small chat model writes on until max_tokens rather than stopping early.
PROMPTS: tuple[str, ...] = (
    "Write a long story about a lighthouse keeper who finds a message in a bottle.",
    "Explain in detail how a bicycle works, part by part.",
    "Describe a walk through a busy market in a large city, with every sound and smell.",
    "Write a detailed guide to growing tomatoes in a small garden.",
    "Tell the history of the printing press and how it changed the world.",
    "Write a letter from a sailor to his family describing a storm at sea.",
    "Explain step by step how to bake bread at home.",
    "Describe the water cycle to a curious ten-year-old, with examples.",
)


@dataclass(frozen=True)
class LoadSpec:
    """One closed-loop run: ``requests`` chat completions at ``concurrency`` in flight."""

    model: str
    concurrency: int
    requests: int
    max_tokens: int
    prompts: Sequence[str] = PROMPTS
    # Same length for every request where the server honours it (vLLM and ours do; others ignore it).
    extra_body: dict[str, Any] = field(default_factory=lambda: {"ignore_eos": True})


@dataclass
class RequestSample:
    """What one request measured; times in seconds (``started`` on the ``time.perf_counter`` clock)."""

    latency: float
    started: float = 0.0
    ttft: float | None = None
    itls: list[float] = field(default_factory=list)
    output_tokens: int = 0
    usage_reported: bool = False
    error: str | None = None


@dataclass
class RunResult:
    """The samples of one run and its wall time (first send to last completion)."""

    spec: LoadSpec
    samples: list[RequestSample]
    wall: float
    others_cpu: float = 0.0  # cores other processes on the machine used meanwhile (the caller measures it)


@dataclass(frozen=True)
class Stats:
    """A run (or several pooled runs) reduced to the reported numbers; latencies in seconds."""

    concurrency: int
    requests: int
    errors: int
    output_tokens: int
    wall: float
    output_tokens_per_s: float
    requests_per_s: float
    ttft_p50: float
    ttft_p99: float
    itl_p50: float
    itl_p99: float
    latency_p50: float
    latency_p99: float
    usage_reported: bool
    first_error: str | None = None
    tokens_per_s_by_run: tuple[float, ...] = ()  # one per pooled run (round): the spread behind the pooled rate
    others_cpu: float = 0.0  # wall-weighted over the pooled runs

    @property
    def tokens_per_request(self) -> float:
        ok = self.requests - self.errors
        return self.output_tokens / ok if ok else 0.0


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (``q`` in [0, 100]); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


async def one_request(
    client: openai.AsyncOpenAI, spec: LoadSpec, prompt: str, streaming: asyncio.Event | None = None
) -> RequestSample:
    """Stream one chat completion and time it; an exception becomes the sample's ``error``. ``streaming`` is
    set at the first content chunk (or at the end, when there was none), for a caller timing others against it."""
    started = time.perf_counter()
    sample = RequestSample(latency=0.0, started=started)
    content_chunks = 0
    last: float | None = None
    try:
        stream = await client.chat.completions.create(
            model=spec.model,
            messages=[{"role": "user", "content": prompt}],
            max_tokens=spec.max_tokens,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
            extra_body=spec.extra_body or None,
        )
        async with stream:  # closes the connection on an error mid-stream too
            async for chunk in stream:
                now = time.perf_counter()
                if chunk.usage is not None:
                    sample.output_tokens = chunk.usage.completion_tokens
                    sample.usage_reported = True
                if not any(choice.delta.content for choice in chunk.choices):
                    continue
                content_chunks += 1
                if last is None:
                    sample.ttft = now - started
                    if streaming is not None:
                        streaming.set()
                else:
                    sample.itls.append(now - last)
                last = now
    except Exception as exc:  # a benchmark counts failures rather than stopping at the first
        sample.error = f"{type(exc).__name__}: {str(exc)[:200]}"
    if streaming is not None:
        streaming.set()
    if not sample.usage_reported:
        sample.output_tokens = content_chunks
    sample.latency = time.perf_counter() - started
    return sample


async def run_load(client: openai.AsyncOpenAI, spec: LoadSpec) -> RunResult:
    """Closed loop: ``concurrency`` workers, each sending its next request when the previous one ends."""
    prompts: Iterator[str] = itertools.cycle(spec.prompts)
    remaining = itertools.count()
    samples: list[RequestSample] = []

    async def worker() -> None:
        while next(remaining) < spec.requests:
            samples.append(await one_request(client, spec, next(prompts)))

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(min(spec.concurrency, spec.requests))))
    return RunResult(spec=spec, samples=samples, wall=time.perf_counter() - started)


def summarize(runs: Sequence[RunResult]) -> Stats:
    """Pool runs of the same spec (one per round): rates are the median of the runs' rates, so one round
    disturbed by other processes does not drag the result; latency percentiles are over every request."""
    if not runs:
        raise ValueError("no runs to summarize")
    samples = [sample for run in runs for sample in run.samples]
    ok = [sample for sample in samples if sample.error is None]
    wall = sum(run.wall for run in runs)
    tokens = sum(sample.output_tokens for sample in ok)
    errors = [sample.error for sample in samples if sample.error is not None]
    ttfts = [sample.ttft for sample in ok if sample.ttft is not None]
    itls = [gap for sample in ok for gap in sample.itls]
    latencies = [sample.latency for sample in ok]
    return Stats(
        concurrency=runs[0].spec.concurrency,
        requests=len(samples),
        errors=len(errors),
        output_tokens=tokens,
        wall=wall,
        output_tokens_per_s=statistics.median(_rate(run, tokens=True) for run in runs),
        requests_per_s=statistics.median(_rate(run, tokens=False) for run in runs),
        ttft_p50=percentile(ttfts, 50),
        ttft_p99=percentile(ttfts, 99),
        itl_p50=percentile(itls, 50),
        itl_p99=percentile(itls, 99),
        latency_p50=percentile(latencies, 50),
        latency_p99=percentile(latencies, 99),
        usage_reported=bool(ok) and all(sample.usage_reported for sample in ok),
        first_error=errors[0] if errors else None,
        tokens_per_s_by_run=tuple(_rate(run, tokens=True) for run in runs),
        others_cpu=sum(run.others_cpu * run.wall for run in runs) / wall if wall > 0 else 0.0,
    )


def _rate(run: RunResult, tokens: bool) -> float:
    """Output tokens (or successful requests) per second of the run's wall time."""
    ok = [sample for sample in run.samples if sample.error is None]
    count = sum(sample.output_tokens for sample in ok) if tokens else len(ok)
    return count / run.wall if run.wall > 0 else 0.0
