"""vLLM's real parsers reading recorded outputs through ``engines.vllm_output`` and ``openai_routes.pipeline.choice``:
the generic format (vLLM's ``hermes``) in every tool mode, and a Qwen3-style reasoning model (``qwen3`` + ``hermes``),
each read token by token as the engine streams it (the same way for streamed and whole answers).

The tokenizer is the default model's (from the BentoML store, imported by ``make models``); the reasoning tests add
Qwen3's ``<think>`` / ``</think>`` / ``<tool_call>`` special tokens to a copy of it.
"""

from __future__ import annotations

import copy
import itertools
import json
from functools import cache
from typing import Any

import pytest

from engines.vllm_output import ModelParsers
from openai_routes.core.engine import ModelCapabilities, OutputDelta, OutputEvent, TokenCounts
from openai_routes.pipeline.choice import ChoiceOutput
from openai_routes.protocol.common import CompletionUsage
from tests.unit.fakes import CHAT_MODEL, FakeGenerateEngine
from tests.unit.test_routes import serve

WEATHER: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
NAMED = {"type": "function", "function": {"name": "get_weather"}}
GENERIC_CALLS = (
    'Let me look. <tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>'
    '<tool_call>{"name": "get_weather", "arguments": {"city": "a < b }"}}</tool_call>'
)
QWEN3_CALL = (
    "<think>\nThe user wants the weather in Paris. I will call get_weather.\n</think>\n\n"
    '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
)
QWEN3_ANSWER = "<think>\nA greeting. Be brief.\n</think>\n\nHello! How can I help?"


@cache
def tokenizer() -> Any:
    import bentoml
    from vllm.tokenizers import get_tokenizer

    return get_tokenizer(bentoml.models.get("smollm2-135m-instruct").path)


@cache
def qwen3_tokenizer() -> Any:
    tok = copy.deepcopy(tokenizer())
    tok.add_special_tokens({"additional_special_tokens": ["<think>", "</think>", "<tool_call>", "</tool_call>"]})
    return tok


def deltas(tok: Any, output: str) -> list[OutputDelta]:
    """``output`` as the engine streams it: one token per delta, each with the text it adds."""
    ids = tok.encode(output, add_special_tokens=False)
    texts = [tok.decode(ids[: i + 1], skip_special_tokens=False) for i in range(len(ids))]
    return [
        OutputDelta(0, text[len(before) :], [token], finish_reason="stop" if i == len(ids) - 1 else None)
        for i, (token, text, before) in enumerate(zip(ids, texts, ["", *texts], strict=False))
    ]


def read(
    parsers: ModelParsers,
    tok: Any,
    output: str,
    tool_choice: str | dict[str, Any],
    tools: list[dict[str, Any]] | None = None,
    single_call: bool = False,
) -> tuple[list[tuple[str, int, str]], ChoiceOutput]:
    tools = [WEATHER] if tools is None else tools
    choice = ChoiceOutput(parsers.reader(tools, tool_choice, [1, 2, 3]), single_call)
    events: list[OutputEvent] = []
    for delta in deltas(tok, output):
        events += choice.feed(delta)
    joined = [
        (kind, index, "".join(event.text for event in group))
        for (kind, index), group in itertools.groupby(events, key=lambda event: (event.kind, event.index))
    ]
    return joined, choice


@pytest.fixture(scope="module")
def generic() -> ModelParsers:
    return ModelParsers(tokenizer(), None, None)


@pytest.fixture(scope="module")
def qwen3() -> ModelParsers:
    return ModelParsers(qwen3_tokenizer(), "hermes", "qwen3")


def test_auto_reads_generic_calls_and_the_text_before_them(generic: ModelParsers) -> None:
    events, choice = read(generic, tokenizer(), GENERIC_CALLS, "auto")
    assert events == [
        ("text", 0, "Let me look. "),
        ("call", 0, "get_weather"),
        ("arguments", 0, '{"city": "Paris"}'),
        ("call", 1, "get_weather"),
        ("arguments", 1, '{"city": "a < b }"}'),
    ]
    output = choice.output()
    assert output.finish_reason == "tool_calls" and output.content == "Let me look. "
    assert [json.loads(call.arguments) for call in output.calls] == [{"city": "Paris"}, {"city": "a < b }"}]
    assert len({call.id for call in output.calls}) == 2


def test_auto_without_a_call_is_text(generic: ModelParsers) -> None:
    events, choice = read(generic, tokenizer(), "Hello there, a < b.", "auto")
    assert events == [("text", 0, "Hello there, a < b.")]
    assert choice.output().finish_reason == "stop" and not choice.output().calls


def test_required_reads_the_json_array(generic: ModelParsers) -> None:
    output = (
        '[{"name":"get_weather","parameters":{"city":"Paris"}},{"name":"get_weather","parameters":{"city":"Rome"}}]'
    )
    events, choice = read(generic, tokenizer(), output, "required")
    assert [(kind, index) for kind, index, _ in events] == [
        ("call", 0),
        ("arguments", 0),
        ("call", 1),
        ("arguments", 1),
    ]
    assert [json.loads(call.arguments) for call in choice.output().calls] == [{"city": "Paris"}, {"city": "Rome"}]


def test_a_named_call_is_its_arguments(generic: ModelParsers) -> None:
    events, choice = read(generic, tokenizer(), '{"city":"Paris"}', NAMED)
    assert events == [("call", 0, "get_weather"), ("arguments", 0, '{"city":"Paris"}')]
    assert choice.output().content is None


def test_single_call_drops_every_call_after_the_first(generic: ModelParsers) -> None:
    events, choice = read(generic, tokenizer(), GENERIC_CALLS, "auto", single_call=True)
    assert [index for kind, index, _ in events if kind != "text"] == [0, 0]
    assert len(choice.output().calls) == 1


def test_a_cut_off_call_is_answered_as_the_raw_text(generic: ModelParsers) -> None:
    choice = ChoiceOutput(generic.reader([WEATHER], NAMED, [1]))
    choice.feed(OutputDelta(0, '{"city":"Par', [1, 2, 3], finish_reason="length"))
    output = choice.output()
    assert output.finish_reason == "length" and not output.calls and output.content == '{"city":"Par'


def test_reasoning_then_a_call(qwen3: ModelParsers) -> None:
    events, choice = read(qwen3, qwen3_tokenizer(), QWEN3_CALL, "auto")
    assert events[0] == ("reasoning", 0, "\nThe user wants the weather in Paris. I will call get_weather.\n")
    assert events[-2:] == [("call", 0, "get_weather"), ("arguments", 0, '{"city": "Paris"}')]
    output = choice.output()
    assert output.reasoning is not None and "get_weather" in output.reasoning
    assert output.content is None and output.finish_reason == "tool_calls"


@pytest.mark.parametrize("tool_choice", ["auto", "none"])
def test_reasoning_then_an_answer(qwen3: ModelParsers, tool_choice: str) -> None:
    events, choice = read(qwen3, qwen3_tokenizer(), QWEN3_ANSWER, tool_choice)
    assert events == [("reasoning", 0, "\nA greeting. Be brief.\n"), ("text", 0, "\n\nHello! How can I help?")]
    assert choice.output().content == "\n\nHello! How can I help?"


def test_reasoning_can_be_left_out(qwen3: ModelParsers) -> None:
    choice = ChoiceOutput(qwen3.reader(None, "none", [1]), with_reasoning=False)
    events = [event for delta in deltas(qwen3_tokenizer(), QWEN3_ANSWER) for event in choice.feed(delta)]
    assert {event.kind for event in events} == {"text"} and choice.output().reasoning is None


def test_the_reasoning_parser_counts_the_reasoning_tokens(qwen3: ModelParsers, generic: ModelParsers) -> None:
    """As vLLM reports them: the tokens between the think markers; usage carries them in
    ``completion_tokens_details``, and a model without a reasoning parser reports no details."""
    tok = qwen3_tokenizer()
    _, choice = read(qwen3, tok, QWEN3_ANSWER, "auto")
    thinking = len(tok.encode("\nA greeting. Be brief.\n", add_special_tokens=False))
    ids = tok.encode(QWEN3_ANSWER, add_special_tokens=False)
    assert 0 < qwen3.count_reasoning_tokens(ids) == thinking < choice.tokens
    details = CompletionUsage.of(TokenCounts(7, len(ids), 0, thinking)).completion_tokens_details
    assert details is not None and details.reasoning_tokens == thinking
    assert generic.count_reasoning_tokens(tokenizer().encode("Hello!")) == 0
    assert CompletionUsage.of(TokenCounts(7, 2, 0, None)).completion_tokens_details is None


class ThinkingEngine(FakeGenerateEngine):
    """The fake engine answering ``QWEN3_ANSWER`` with a Qwen3 reasoning parser: its count is vLLM's real parser's,
    over the answer's Qwen3 tokens (the fake's own ids are its pieces)."""

    def __init__(self, parsers: ModelParsers) -> None:
        tok = qwen3_tokenizer()
        pieces = [delta.text for delta in deltas(tok, QWEN3_ANSWER)]
        super().__init__(reply=lambda _prompt, _choice: pieces, context=4096)
        self.capabilities = ModelCapabilities(reasoning_parser=True)
        self.parsers = parsers

    def count_reasoning_tokens(self, token_ids: Any) -> int:
        text = self.text_of(token_ids)
        return self.parsers.count_reasoning_tokens(qwen3_tokenizer().encode(text, add_special_tokens=False))


@pytest.mark.parametrize("stream", [False, True])
async def test_completions_count_reasoning_tokens_as_chat_does(qwen3: ModelParsers, stream: bool) -> None:
    """Completions leave the reasoning in the text (as vLLM's do) but count it in usage, as chat does."""
    thinking = len(qwen3_tokenizer().encode("\nA greeting. Be brief.\n", add_special_tokens=False))
    usage_of = {}
    inputs: list[tuple[str, dict[str, Any]]] = [
        ("/completions", {"prompt": "Hi", "max_tokens": 256}),
        ("/chat/completions", {"messages": [{"role": "user", "content": "Hi"}]}),
    ]
    async with serve(ThinkingEngine(qwen3)) as h:
        for path, fields in inputs:
            body: dict[str, Any] = {"model": CHAT_MODEL, "stream": stream, **fields}
            if stream:
                body["stream_options"] = {"include_usage": True}
            response = await h.client.post(path, json=body)
            assert response.status_code == 200, response.text
            if stream:
                frames = [line[6:] for line in response.text.split("\n\n") if line.startswith("data: {")]
                usage_of[path] = json.loads(frames[-1])["usage"]
            else:
                usage_of[path] = response.json()["usage"]
                if path == "/completions":
                    assert "<think>" in response.json()["choices"][0]["text"]
    for usage in usage_of.values():
        assert usage["completion_tokens_details"]["reasoning_tokens"] == thinking
    assert usage_of["/completions"]["completion_tokens"] == usage_of["/chat/completions"]["completion_tokens"]


def test_parsers_that_read_tool_tokens_keep_special_tokens(generic: ModelParsers) -> None:
    assert generic.skip_special_tokens(None) is True
    assert generic.skip_special_tokens([WEATHER]) is False  # hermes's own adjust_request
