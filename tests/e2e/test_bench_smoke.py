"""The benchmark harness (``benchmarks/``) at tiny size against the suite's server, so ``make bench`` can't rot:
the load generator's numbers and the results table. Starts no server of its own.
"""

from __future__ import annotations

import math

import openai
import pytest

from benchmarks import report
from benchmarks.loadgen import LoadSpec, Stats, run_load, summarize
from tests.e2e.conftest import CHAT_MODEL


async def measure(client: openai.AsyncOpenAI, concurrency: int, requests: int, max_tokens: int) -> Stats:
    spec = LoadSpec(model=CHAT_MODEL, concurrency=concurrency, requests=requests, max_tokens=max_tokens)
    result = await run_load(client, spec)
    assert len(result.samples) == requests
    return summarize([result])


def check(stats: Stats, requests: int, max_tokens: int) -> None:
    assert stats.errors == 0, stats.first_error
    assert stats.requests == requests
    assert stats.usage_reported
    assert stats.output_tokens == requests * max_tokens  # ignore_eos: every request runs to max_tokens
    assert stats.tokens_per_request == max_tokens
    assert stats.wall > 0
    assert stats.output_tokens_per_s > 0
    assert stats.requests_per_s > 0
    for latency in (stats.ttft_p50, stats.ttft_p99, stats.latency_p50, stats.latency_p99):
        assert not math.isnan(latency)
        assert latency >= 0
    assert stats.ttft_p50 <= stats.ttft_p99 <= stats.latency_p99
    assert stats.latency_p50 <= stats.wall


def tables(markdown: str) -> list[list[str]]:
    """The markdown's tables, each as its consecutive ``|`` rows."""
    found: list[list[str]] = [[]]
    for line in markdown.splitlines():
        if line.startswith("|"):
            found[-1].append(line)
        elif found[-1]:
            found.append([])
    return [table for table in found if table]


@pytest.mark.parametrize(("concurrency", "requests"), [(1, 3), (2, 4)])
async def test_load_generator_measures_streams(aclient: openai.AsyncOpenAI, concurrency: int, requests: int) -> None:
    stats = await measure(aclient, concurrency, requests, max_tokens=4)
    check(stats, requests, max_tokens=4)
    assert stats.concurrency == concurrency
    assert 0 <= stats.itl_p50 <= stats.itl_p99  # 4 tokens: gaps between content chunks exist


async def test_overhead_mode_counts_one_token_requests(aclient: openai.AsyncOpenAI) -> None:
    stats = await measure(aclient, concurrency=2, requests=4, max_tokens=1)
    check(stats, requests=4, max_tokens=1)


async def test_results_table_renders_measured_stats(aclient: openai.AsyncOpenAI) -> None:
    stats = {level: await measure(aclient, level, requests=2, max_tokens=4) for level in (1, 2)}
    markdown = report.render_markdown(
        {"ours": stats, "vllm": stats}, levels=[1, 2], overhead={"ours": stats[2]}, preamble=["# smoke"]
    )
    for table in tables(markdown):
        assert len({row.count("|") for row in table}) == 1, table  # every row has the header's columns
        assert set(table[1].strip("| ").split(" | ")) == {"---"}
    for level in (1, 2):
        assert f"## Concurrency {level}" in markdown
        assert f"| {level} | 1.00× | 1.00× | n/a | n/a |" in markdown  # ours vs itself; llama.cpp not run
    assert "| llama.cpp server | not run |" in markdown
    assert f"| bento-oai (ours) | {stats[1].output_tokens_per_s:.1f} |" in markdown
    assert "## Tiny requests (max_tokens=1, concurrency 2)" in markdown
    assert len(tables(markdown)) == 4  # summary, two levels, tiny requests
