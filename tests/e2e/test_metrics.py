"""``/metrics`` after a chat request: the time-to-first-token histogram's buckets and the token counters, labelled
with the model, grew by at least what the request's ``usage`` reports.

The metrics live in prometheus_client's multiprocess files under the server's BentoML home; each test server has a
home of its own (``tests.e2e.server.bentoml_home``), so another server starting does not empty them. The checks are
"grew by at least": other requests may run meanwhile, never fewer tokens than this one's.
"""

from __future__ import annotations

import re

import httpx
import openai
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import CHAT_MODEL
from tests.e2e.probes import wait_for
from tests.e2e.server import Server

TTFT = "bento_oai_time_to_first_token_seconds"
COUNTERS = ("bento_oai_prompt_tokens", "bento_oai_generation_tokens")


def scrape(server: Server) -> str:
    response = httpx.get(f"{server.base_url}/metrics", timeout=30)
    assert response.status_code == 200, response.text
    return response.text


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the exposition, by name and sorted labels (parsed by prometheus_client's own parser)."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def ttft_buckets(text: str) -> dict[str, float]:
    """The chat model's TTFT bucket counts by ``le``, from the raw ``_bucket{...le=...}`` lines."""
    buckets = {}
    for line in text.splitlines():
        if line.startswith(f"{TTFT}_bucket{{") and f'model="{CHAT_MODEL}"' in line:
            le = re.search(r'le="([^"]+)"', line)
            assert le is not None, line
            buckets[le.group(1)] = float(line.rsplit(" ", 1)[1])
    return buckets


def counter(text: str, name: str) -> float:
    return samples(text).get((f"{name}_total", (("model", CHAT_MODEL),)), 0.0)


def test_a_chat_request_shows_in_the_ttft_buckets_and_the_token_counters(server: Server, client: openai.OpenAI) -> None:
    before = scrape(server)
    reply = client.chat.completions.create(
        model=CHAT_MODEL, messages=[{"role": "user", "content": "Name a colour."}], max_tokens=8, temperature=0
    )
    usage = reply.usage
    assert usage is not None and usage.prompt_tokens > 0 and usage.completion_tokens > 0
    grown = {"bento_oai_prompt_tokens": usage.prompt_tokens, "bento_oai_generation_tokens": usage.completion_tokens}

    def counted() -> bool:
        now = scrape(server)
        return all(counter(now, name) - counter(before, name) >= grown[name] for name in COUNTERS) and (
            ttft_buckets(now).get("+Inf", 0) >= ttft_buckets(before).get("+Inf", 0) + 1
        )

    wait_for(counted, 30, "the request's tokens and first token in /metrics")
    after = scrape(server)
    buckets = ttft_buckets(after)
    assert len(buckets) >= 10 and "+Inf" in buckets, buckets  # one line per bucket bound, each with the model
    assert list(buckets.values()) == sorted(buckets.values()), "buckets are cumulative"
    for name in COUNTERS:
        assert counter(after, name) > 0, name
        print(f"\n{name}: {counter(before, name):.0f} -> {counter(after, name):.0f} (usage {grown[name]})")
