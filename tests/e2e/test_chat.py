"""``/v1/chat/completions`` through the official SDK (and raw SSE), against the real engine.

Greedy (temperature 0) answers of SmolLM2-135M-Instruct are deterministic, so several tests compare one
request's output with another's instead of with hard-coded text.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk, ChatCompletionMessageParam

from tests.e2e.conftest import CHAT_MODEL

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

FRANCE: list[ChatCompletionMessageParam] = [{"role": "user", "content": "What is the capital of France?"}]
STORY: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "Write a long story about a dragon who learns to bake bread."}
]


def chat(client: openai.OpenAI, messages: list[ChatCompletionMessageParam] = FRANCE, **params: Any) -> ChatCompletion:
    completion: ChatCompletion = client.chat.completions.create(
        model=CHAT_MODEL, messages=messages, stream=False, **params
    )
    return completion


def chat_stream(
    client: openai.OpenAI, messages: list[ChatCompletionMessageParam] = FRANCE, **params: Any
) -> list[ChatCompletionChunk]:
    return list(client.chat.completions.create(model=CHAT_MODEL, messages=messages, stream=True, **params))


def text(completion: ChatCompletion, index: int = 0) -> str:
    content = completion.choices[index].message.content
    assert content is not None
    return content


def streamed_text(chunks: list[ChatCompletionChunk], index: int = 0) -> str:
    return "".join(c.delta.content or "" for chunk in chunks for c in chunk.choices if c.index == index)


def prompt_tokens(tokenizer: PreTrainedTokenizerBase, messages: Sequence[Mapping[str, object]]) -> int:
    """Tokens of the conversation rendered by the model's own chat template, with the generation prompt."""
    conversation = [{key: str(value) for key, value in message.items()} for message in messages]
    rendered = tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
    assert isinstance(rendered, str)
    return len(tokenizer.encode(rendered, add_special_tokens=False))


def raw_sse(http: httpx.Client, body: dict[str, Any]) -> tuple[httpx.Response, str]:
    with http.stream("POST", "/v1/chat/completions", json=body) as response:
        raw = response.read().decode()
    return response, raw


def sse_payloads(raw: str) -> list[str]:
    """The ``data:`` payloads of a raw SSE body (comment lines skipped); checks the framing on the way."""
    assert raw.endswith("data: [DONE]\n\n"), raw[-200:]
    payloads = []
    for event in raw.split("\n\n")[:-1]:
        lines = [line for line in event.split("\n") if not line.startswith(":")]
        if not lines:
            continue
        assert len(lines) == 1 and lines[0].startswith("data: "), event
        payloads.append(lines[0].removeprefix("data: "))
    assert payloads[-1] == "[DONE]" and "[DONE]" not in payloads[:-1]
    return payloads


@pytest.fixture(scope="module")
def paris(client: openai.OpenAI) -> ChatCompletion:
    """The greedy answer to the France question, the reference for several tests."""
    return chat(client, temperature=0, max_tokens=30)


# --- non-streaming -------------------------------------------------------------------------------------------


def test_capital_of_france(paris: ChatCompletion, tokenizer: PreTrainedTokenizerBase) -> None:
    assert paris.object == "chat.completion" and paris.model == CHAT_MODEL
    assert paris.id and paris.created > 0
    assert len(paris.choices) == 1
    choice = paris.choices[0]
    assert choice.index == 0 and choice.message.role == "assistant"
    assert "Paris" in text(paris)
    assert choice.finish_reason == "stop"
    assert paris.usage is not None
    assert paris.usage.prompt_tokens == prompt_tokens(tokenizer, FRANCE)
    assert 0 < paris.usage.completion_tokens < 30
    assert paris.usage.total_tokens == paris.usage.prompt_tokens + paris.usage.completion_tokens


def test_content_as_text_parts(client: openai.OpenAI, paris: ChatCompletion) -> None:
    answer = chat(
        client,
        [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is the capital "},
                    {"type": "text", "text": "of France?"},
                ],
            }
        ],
        temperature=0,
        max_tokens=30,
    )
    assert text(answer) == text(paris)
    assert answer.usage is not None and paris.usage is not None
    assert answer.usage.prompt_tokens == paris.usage.prompt_tokens


def test_every_role(client: openai.OpenAI, tokenizer: PreTrainedTokenizerBase) -> None:
    messages: list[ChatCompletionMessageParam] = [
        {"role": "system", "content": "You are a geography tutor."},
        {"role": "developer", "content": "Answer in one sentence."},
        {"role": "user", "content": "What is the capital of France?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "lookup_capital", "arguments": '{"country": "France"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "Paris"},
        {"role": "user", "content": "So what is the answer?"},
    ]
    answer = chat(client, messages, temperature=0, max_tokens=10)
    assert answer.choices[0].finish_reason in ("stop", "length")
    assert text(answer)
    # Every turn reaches the prompt: developer as system, the tool-call turn at least as an empty assistant turn
    # (how a template without tool support shows the calls is the server's choice, hence ">=").
    rendered = [
        {"role": "system", "content": "You are a geography tutor."},
        {"role": "system", "content": "Answer in one sentence."},
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": ""},
        {"role": "tool", "content": "Paris"},
        {"role": "user", "content": "So what is the answer?"},
    ]
    assert answer.usage is not None
    assert answer.usage.prompt_tokens >= prompt_tokens(tokenizer, rendered)


def test_developer_is_treated_as_system(client: openai.OpenAI) -> None:
    question: ChatCompletionMessageParam = {"role": "user", "content": "Name a color."}
    as_system = chat(client, [{"role": "system", "content": "You only speak French."}, question], temperature=0)
    as_developer = chat(client, [{"role": "developer", "content": "You only speak French."}, question], temperature=0)
    assert as_system.usage is not None and as_developer.usage is not None
    assert as_developer.usage.prompt_tokens == as_system.usage.prompt_tokens
    assert text(as_developer) == text(as_system)


def test_tool_message_needs_tool_call_id(client: openai.OpenAI) -> None:
    no_id: list[Any] = [*FRANCE, {"role": "tool", "content": "Paris"}]
    with pytest.raises(openai.BadRequestError) as info:
        chat(client, no_id, max_tokens=5)
    assert info.value.param == "messages[1]"


def test_assistant_message_needs_content_or_tool_calls(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        chat(client, [*FRANCE, {"role": "assistant", "content": None}], max_tokens=5)
    assert info.value.param == "messages[1]"


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
def test_token_limit_stops_with_length(client: openai.OpenAI, field: str) -> None:
    answer = chat(client, STORY, temperature=0, **{field: 5})
    assert answer.choices[0].finish_reason == "length"
    assert answer.usage is not None and answer.usage.completion_tokens == 5
    assert text(answer)


# --- streaming -----------------------------------------------------------------------------------------------


def test_stream_shape_with_usage(client: openai.OpenAI, paris: ChatCompletion) -> None:
    chunks = chat_stream(client, temperature=0, max_tokens=30, stream_options={"include_usage": True})
    assert len(chunks) >= 3
    assert {chunk.id for chunk in chunks} == {chunks[0].id}
    assert {chunk.created for chunk in chunks} == {chunks[0].created}
    assert all(chunk.object == "chat.completion.chunk" and chunk.model == CHAT_MODEL for chunk in chunks)
    *body, final = chunks
    assert final.choices == [] and final.usage is not None
    assert all(chunk.usage is None for chunk in body)
    assert all(len(chunk.choices) == 1 and chunk.choices[0].index == 0 for chunk in body)
    assert body[0].choices[0].delta.role == "assistant"
    finishes = [chunk.choices[0].finish_reason for chunk in body if chunk.choices[0].finish_reason]
    assert finishes == ["stop"]
    assert body[-1].choices[0].finish_reason == "stop"
    assert streamed_text(chunks) == text(paris)
    assert paris.usage is not None
    assert final.usage.prompt_tokens == paris.usage.prompt_tokens
    assert final.usage.completion_tokens == paris.usage.completion_tokens
    assert final.usage.total_tokens == final.usage.prompt_tokens + final.usage.completion_tokens


def test_stream_without_usage_option_has_no_usage(client: openai.OpenAI) -> None:
    chunks = chat_stream(client, STORY, temperature=0, max_tokens=5)
    assert chunks and all(chunk.usage is None for chunk in chunks)
    assert all(chunk.choices for chunk in chunks)
    assert [c.finish_reason for chunk in chunks for c in chunk.choices if c.finish_reason] == ["length"]


def test_raw_sse_framing(http: httpx.Client) -> None:
    body = {
        "model": CHAT_MODEL,
        "messages": FRANCE,
        "temperature": 0,
        "max_tokens": 5,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    response, raw = raw_sse(http, body)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    payloads = sse_payloads(raw)
    events = [json.loads(payload) for payload in payloads[:-1]]
    assert all(event["object"] == "chat.completion.chunk" for event in events)
    assert events[-1]["choices"] == [] and events[-1]["usage"]["completion_tokens"] == 5
    assert all(event["usage"] is None for event in events[:-1])


def test_stream_text_equals_non_stream_text(client: openai.OpenAI) -> None:
    whole = chat(client, STORY, temperature=0, max_tokens=20)
    chunks = chat_stream(client, STORY, temperature=0, max_tokens=20)
    assert streamed_text(chunks) == text(whole)
    assert len(chunks) > 1


# --- n -------------------------------------------------------------------------------------------------------


def test_n_three_samples(client: openai.OpenAI, tokenizer: PreTrainedTokenizerBase) -> None:
    answer = chat(client, STORY, n=3, temperature=1, max_tokens=6, extra_body={"ignore_eos": True})
    assert sorted(choice.index for choice in answer.choices) == [0, 1, 2]
    assert all(choice.finish_reason == "length" and choice.message.content for choice in answer.choices)
    assert answer.usage is not None
    assert answer.usage.prompt_tokens == prompt_tokens(tokenizer, STORY)
    assert answer.usage.completion_tokens == 3 * 6
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + 18


def test_n_three_streaming(client: openai.OpenAI) -> None:
    chunks = chat_stream(
        client,
        STORY,
        n=3,
        temperature=1,
        max_tokens=6,
        stream_options={"include_usage": True},
        extra_body={"ignore_eos": True},
    )
    assert {chunk.id for chunk in chunks} == {chunks[0].id}
    for index in range(3):
        deltas = [c for chunk in chunks for c in chunk.choices if c.index == index]
        assert deltas, f"no chunk for choice {index}"
        assert deltas[0].delta.role == "assistant"
        assert all(d.delta.role is None for d in deltas[1:])
        assert [d.finish_reason for d in deltas if d.finish_reason] == ["length"]
        assert streamed_text(chunks, index)
    assert not [c for chunk in chunks for c in chunk.choices if c.index not in (0, 1, 2)]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 18


def test_n_two_at_temperature_zero_is_greedy_twice(client: openai.OpenAI, paris: ChatCompletion) -> None:
    answer = chat(client, n=2, temperature=0, max_tokens=30)
    assert [choice.index for choice in answer.choices] == [0, 1]
    assert text(answer, 0) == text(answer, 1) == text(paris)


# --- stop, seed, penalties, logit_bias -----------------------------------------------------------------------


@pytest.mark.parametrize("stop", ["Paris", ["never-produced-xyz", "Paris"]])
def test_stop_cuts_the_output(client: openai.OpenAI, paris: ChatCompletion, stop: str | list[str]) -> None:
    greedy = text(paris)
    assert "Paris" in greedy
    answer = chat(client, temperature=0, max_tokens=30, stop=stop)
    assert "Paris" not in text(answer)
    assert text(answer) == greedy[: greedy.index("Paris")]
    assert answer.choices[0].finish_reason == "stop"


def test_same_seed_same_sample(client: openai.OpenAI) -> None:
    first = chat(client, STORY, temperature=1, seed=1234, max_tokens=12)
    second = chat(client, STORY, temperature=1, seed=1234, max_tokens=12)
    assert text(first) == text(second)


def test_different_seeds_differ(client: openai.OpenAI) -> None:
    samples = {text(chat(client, STORY, temperature=1, seed=seed, max_tokens=12)) for seed in range(1, 6)}
    assert len(samples) > 1


def test_penalties_accepted(client: openai.OpenAI) -> None:
    answer = chat(client, STORY, temperature=0, max_tokens=8, presence_penalty=1.5, frequency_penalty=-0.5)
    assert answer.usage is not None and answer.usage.completion_tokens == 8
    assert text(answer)


def test_logit_bias_bans_the_greedy_first_token(
    client: openai.OpenAI, paris: ChatCompletion, tokenizer: PreTrainedTokenizerBase
) -> None:
    first_id = tokenizer.encode(text(paris), add_special_tokens=False)[0]
    first_text = tokenizer.decode([first_id])
    assert isinstance(first_text, str)
    assert text(paris).startswith(first_text)
    banned = chat(client, temperature=0, max_tokens=5, logit_bias={str(first_id): -100}, logprobs=True)
    assert banned.choices[0].logprobs is not None and banned.choices[0].logprobs.content
    assert banned.choices[0].logprobs.content[0].token != first_text


# --- logprobs ------------------------------------------------------------------------------------------------


def test_logprobs_and_top_logprobs(client: openai.OpenAI, paris: ChatCompletion) -> None:
    answer = chat(client, temperature=0, max_tokens=30, logprobs=True, top_logprobs=3)
    assert text(answer) == text(paris)
    logprobs = answer.choices[0].logprobs
    assert logprobs is not None and logprobs.content is not None
    assert answer.usage is not None and len(logprobs.content) == answer.usage.completion_tokens
    for entry in logprobs.content:
        assert isinstance(entry.token, str) and entry.logprob <= 0
        assert entry.bytes == list(entry.token.encode())
        assert len(entry.top_logprobs) == 3
        assert [top.logprob for top in entry.top_logprobs] == sorted(
            (t.logprob for t in entry.top_logprobs), reverse=True
        )
        assert all(top.logprob <= 0 and top.bytes == list(top.token.encode()) for top in entry.top_logprobs)
        # greedy: the chosen token is the most likely one
        assert entry.top_logprobs[0].token == entry.token
        assert entry.top_logprobs[0].logprob == pytest.approx(entry.logprob)
    assert "".join(entry.token for entry in logprobs.content).startswith(text(paris))


def test_logprobs_without_top_logprobs(client: openai.OpenAI) -> None:
    answer = chat(client, STORY, temperature=0, max_tokens=4, logprobs=True)
    logprobs = answer.choices[0].logprobs
    assert logprobs is not None and logprobs.content is not None and len(logprobs.content) == 4
    assert all(entry.top_logprobs == [] and entry.logprob <= 0 for entry in logprobs.content)


def test_no_logprobs_unless_asked(paris: ChatCompletion) -> None:
    assert paris.choices[0].logprobs is None


# --- vLLM's extra sampling fields, unknown and ignored fields ------------------------------------------------


@pytest.mark.parametrize("extra", [{"top_k": 1}, {"min_p": 1.0}], ids=["top_k", "min_p"])
def test_greedy_through_extra_sampling_fields(client: openai.OpenAI, extra: dict[str, Any]) -> None:
    greedy = chat(client, STORY, temperature=0, max_tokens=10)
    sampled = chat(client, STORY, temperature=1, max_tokens=10, extra_body=extra)
    assert text(sampled) == text(greedy)


def test_repetition_penalty_accepted(client: openai.OpenAI) -> None:
    answer = chat(client, STORY, temperature=0, max_tokens=8, extra_body={"repetition_penalty": 1.3})
    assert answer.usage is not None and answer.usage.completion_tokens == 8
    assert text(answer)


def test_min_tokens(client: openai.OpenAI, paris: ChatCompletion) -> None:
    assert paris.usage is not None and paris.usage.completion_tokens < 20
    answer = chat(client, temperature=0, max_tokens=20, extra_body={"min_tokens": 20})
    assert answer.usage is not None and answer.usage.completion_tokens == 20
    assert answer.choices[0].finish_reason == "length"


def test_ignore_eos(client: openai.OpenAI, paris: ChatCompletion) -> None:
    assert paris.usage is not None and paris.usage.completion_tokens < 16
    answer = chat(client, temperature=0, max_tokens=16, extra_body={"ignore_eos": True})
    assert answer.usage is not None and answer.usage.completion_tokens == 16
    assert answer.choices[0].finish_reason == "length"
    assert text(answer).startswith(text(paris))


def test_unknown_fields_are_ignored(client: openai.OpenAI, paris: ChatCompletion) -> None:
    answer = chat(
        client,
        temperature=0,
        max_tokens=30,
        extra_body={"not_an_openai_field": {"nested": [1, 2]}, "another_one": "x"},
    )
    assert text(answer) == text(paris)


def test_user_metadata_store_accepted(client: openai.OpenAI, paris: ChatCompletion) -> None:
    answer = chat(client, temperature=0, max_tokens=30, user="user-1234", metadata={"purpose": "e2e"}, store=False)
    assert text(answer) == text(paris)
