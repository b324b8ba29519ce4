"""``/v1/completions`` through the official SDK (and raw SSE), against the real engine.

Prompt forms (text, texts, token ids, lists of token ids) are checked against each other: the same prompt in
any form gives the same greedy text.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import httpx
import openai
import pytest
from openai.types import Completion

from tests.e2e.conftest import CHAT_MODEL

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

FRANCE = "The capital of France is"
STORY = "Once upon a time"


def complete(client: openai.OpenAI, prompt: Any = FRANCE, **params: Any) -> Completion:
    completion: Completion = client.completions.create(model=CHAT_MODEL, prompt=prompt, stream=False, **params)
    return completion


def complete_stream(client: openai.OpenAI, prompt: Any = FRANCE, **params: Any) -> list[Completion]:
    return list(client.completions.create(model=CHAT_MODEL, prompt=prompt, stream=True, **params))


def streamed_text(chunks: list[Completion], index: int = 0) -> str:
    return "".join(c.text for chunk in chunks for c in chunk.choices if c.index == index)


def ids(tokenizer: PreTrainedTokenizerBase, prompt: str) -> list[int]:
    return list(tokenizer.encode(prompt))


@pytest.fixture(scope="module")
def greedy(client: openai.OpenAI) -> dict[str, Completion]:
    """Greedy 8-token completions of both prompts, the reference for the other forms."""
    return {prompt: complete(client, prompt, temperature=0, max_tokens=8) for prompt in (FRANCE, STORY)}


def test_string_prompt(greedy: dict[str, Completion], tokenizer: PreTrainedTokenizerBase) -> None:
    completion = greedy[FRANCE]
    assert completion.object == "text_completion" and completion.model == CHAT_MODEL
    assert completion.id and completion.created > 0
    assert len(completion.choices) == 1 and completion.choices[0].index == 0
    assert "Paris" in completion.choices[0].text
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == len(ids(tokenizer, FRANCE))
    assert completion.usage.completion_tokens == 8
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + 8


def test_list_of_strings_indexes_choices_by_prompt_then_sample(
    client: openai.OpenAI, greedy: dict[str, Completion], tokenizer: PreTrainedTokenizerBase
) -> None:
    completion = complete(client, [FRANCE, STORY], n=2, temperature=0, max_tokens=8)
    assert [choice.index for choice in completion.choices] == [0, 1, 2, 3]
    texts = [choice.text for choice in completion.choices]
    assert texts[0] == texts[1] == greedy[FRANCE].choices[0].text
    assert texts[2] == texts[3] == greedy[STORY].choices[0].text
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == len(ids(tokenizer, FRANCE)) + len(ids(tokenizer, STORY))
    assert completion.usage.completion_tokens == 4 * 8
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens


def test_token_id_prompt(
    client: openai.OpenAI, greedy: dict[str, Completion], tokenizer: PreTrainedTokenizerBase
) -> None:
    completion = complete(client, ids(tokenizer, FRANCE), temperature=0, max_tokens=8)
    assert completion.choices[0].text == greedy[FRANCE].choices[0].text
    assert completion.usage is not None and completion.usage.prompt_tokens == len(ids(tokenizer, FRANCE))


def test_list_of_token_id_lists(
    client: openai.OpenAI, greedy: dict[str, Completion], tokenizer: PreTrainedTokenizerBase
) -> None:
    completion = complete(client, [ids(tokenizer, STORY), ids(tokenizer, FRANCE)], temperature=0, max_tokens=8)
    assert [choice.index for choice in completion.choices] == [0, 1]
    assert completion.choices[0].text == greedy[STORY].choices[0].text
    assert completion.choices[1].text == greedy[FRANCE].choices[0].text


def test_echo(client: openai.OpenAI, greedy: dict[str, Completion]) -> None:
    completion = complete(client, FRANCE, temperature=0, max_tokens=8, echo=True)
    assert completion.choices[0].text.startswith(FRANCE)
    assert completion.choices[0].text == FRANCE + greedy[FRANCE].choices[0].text
    assert completion.usage is not None and completion.usage.completion_tokens == 8


def test_logprobs(client: openai.OpenAI, greedy: dict[str, Completion]) -> None:
    completion = complete(client, FRANCE, temperature=0, max_tokens=8, logprobs=2)
    choice = completion.choices[0]
    assert choice.text == greedy[FRANCE].choices[0].text
    logprobs = choice.logprobs
    assert logprobs is not None
    assert logprobs.tokens is not None and logprobs.token_logprobs is not None
    assert logprobs.top_logprobs is not None and logprobs.text_offset is not None
    assert len(logprobs.tokens) == len(logprobs.token_logprobs) == len(logprobs.top_logprobs) == 8
    assert len(logprobs.text_offset) == 8
    assert "".join(logprobs.tokens) == choice.text
    assert all(value is not None and value <= 0 for value in logprobs.token_logprobs)
    for token, value, top in zip(logprobs.tokens, logprobs.token_logprobs, logprobs.top_logprobs, strict=True):
        assert isinstance(top, dict) and len(top) == 2
        assert all(v <= 0 for v in top.values())
        assert max(top, key=lambda t: top[t]) == token  # greedy picks the most likely token
        assert top[token] == pytest.approx(value)
    assert logprobs.text_offset[0] == 0
    assert all(b > a for a, b in zip(logprobs.text_offset, logprobs.text_offset[1:], strict=False))
    offsets = [sum(len(t) for t in logprobs.tokens[:i]) for i in range(8)]
    assert logprobs.text_offset == offsets


def test_echo_with_logprobs(client: openai.OpenAI, tokenizer: PreTrainedTokenizerBase) -> None:
    completion = complete(client, FRANCE, temperature=0, max_tokens=4, echo=True, logprobs=1)
    choice = completion.choices[0]
    assert choice.text.startswith(FRANCE)
    logprobs = choice.logprobs
    assert logprobs is not None and logprobs.tokens is not None and logprobs.token_logprobs is not None
    assert logprobs.top_logprobs is not None and logprobs.text_offset is not None
    assert len(logprobs.tokens) == len(ids(tokenizer, FRANCE)) + 4
    assert "".join(logprobs.tokens) == choice.text
    assert logprobs.token_logprobs[0] is None and logprobs.top_logprobs[0] is None
    assert all(value is not None and value <= 0 for value in logprobs.token_logprobs[1:])
    assert logprobs.text_offset == [sum(len(t) for t in logprobs.tokens[:i]) for i in range(len(logprobs.tokens))]


def test_stream_echo_with_logprobs(client: openai.OpenAI, greedy: dict[str, Completion]) -> None:
    chunks = complete_stream(client, FRANCE, temperature=0, max_tokens=8, echo=True, logprobs=1)
    assert streamed_text(chunks) == FRANCE + greedy[FRANCE].choices[0].text
    tokens = [t for chunk in chunks for c in chunk.choices if c.logprobs for t in c.logprobs.tokens or []]
    assert "".join(tokens) == FRANCE + greedy[FRANCE].choices[0].text


def test_n_samples(client: openai.OpenAI) -> None:
    completion = complete(client, STORY, n=3, temperature=1, max_tokens=5, extra_body={"ignore_eos": True})
    assert [choice.index for choice in completion.choices] == [0, 1, 2]
    assert all(choice.finish_reason == "length" and choice.text for choice in completion.choices)
    assert completion.usage is not None and completion.usage.completion_tokens == 15


@pytest.mark.parametrize("stop", [".", ["never-produced-xyz", "."]])
def test_stop(client: openai.OpenAI, greedy: dict[str, Completion], stop: str | list[str]) -> None:
    full = greedy[FRANCE].choices[0].text
    assert "." in full
    completion = complete(client, FRANCE, temperature=0, max_tokens=8, stop=stop)
    assert completion.choices[0].text == full[: full.index(".")]
    assert completion.choices[0].finish_reason == "stop"


def test_max_tokens_defaults_to_16(client: openai.OpenAI) -> None:
    completion = complete(client, STORY, temperature=0)
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage is not None and completion.usage.completion_tokens == 16


def test_seed(client: openai.OpenAI) -> None:
    first = complete(client, STORY, temperature=1, seed=42, max_tokens=12)
    again = complete(client, STORY, temperature=1, seed=42, max_tokens=12)
    assert first.choices[0].text == again.choices[0].text
    samples = {complete(client, STORY, temperature=1, seed=s, max_tokens=12).choices[0].text for s in range(1, 6)}
    assert len(samples) > 1


def test_stream(client: openai.OpenAI, greedy: dict[str, Completion]) -> None:
    chunks = complete_stream(client, FRANCE, temperature=0, max_tokens=8, stream_options={"include_usage": True})
    assert len(chunks) >= 3
    assert all(chunk.object == "text_completion" for chunk in chunks)
    assert {chunk.id for chunk in chunks} == {chunks[0].id}
    *body, final = chunks
    assert final.choices == [] and final.usage is not None
    assert all(chunk.usage is None for chunk in body)
    assert streamed_text(chunks) == greedy[FRANCE].choices[0].text
    assert [c.finish_reason for chunk in body for c in chunk.choices if c.finish_reason] == ["length"]
    reference = greedy[FRANCE].usage
    assert reference is not None
    assert final.usage.prompt_tokens == reference.prompt_tokens
    assert final.usage.completion_tokens == 8


def test_stream_several_prompts(client: openai.OpenAI, greedy: dict[str, Completion]) -> None:
    chunks = complete_stream(client, [FRANCE, STORY], temperature=0, max_tokens=8)
    assert all(chunk.usage is None for chunk in chunks)
    for index, prompt in enumerate((FRANCE, STORY)):
        assert streamed_text(chunks, index) == greedy[prompt].choices[0].text
        finishes = [c.finish_reason for chunk in chunks for c in chunk.choices if c.index == index and c.finish_reason]
        assert finishes == ["length"]


def test_raw_sse(http: httpx.Client) -> None:
    body = {"model": CHAT_MODEL, "prompt": FRANCE, "max_tokens": 3, "stream": True}
    with http.stream("POST", "/v1/completions", json=body) as response:
        raw = response.read().decode()
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert raw.endswith("data: [DONE]\n\n")
    events = [event for event in raw.split("\n\n") if event and not event.startswith(":")]
    assert events[-1] == "data: [DONE]"
    for event in events[:-1]:
        assert event.startswith("data: ")
        assert json.loads(event.removeprefix("data: "))["object"] == "text_completion"


def test_a_repeated_prompt_reports_the_engines_cached_tokens(client: openai.OpenAI) -> None:
    """Prefix caching: the second time a long prompt comes, the engine reuses its blocks, and usage says how many
    prompt tokens it did not compute again (as chat reports it)."""
    text = " ".join(f"Entry {i}: the colour of box {i} is {'red' if i % 3 else 'blue'}." for i in range(60))
    first = client.completions.create(model=CHAT_MODEL, prompt=text, max_tokens=4, temperature=0)
    second = client.completions.create(model=CHAT_MODEL, prompt=text, max_tokens=4, temperature=0)
    assert first.usage is not None and second.usage is not None
    assert first.usage.prompt_tokens_details is not None and second.usage.prompt_tokens_details is not None
    assert second.usage.prompt_tokens == first.usage.prompt_tokens > 256
    cached = second.usage.prompt_tokens_details.cached_tokens
    assert cached is not None and 0 < cached <= second.usage.prompt_tokens
