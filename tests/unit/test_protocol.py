"""Request schemas: OpenAI's fixed bounds, message rules, prompt shapes, and the conversion to engine options."""

from __future__ import annotations

from typing import Any

import pydantic
import pytest
from pydantic import BaseModel, ValidationError

from openai_routes.core.engine import SamplingOptions
from openai_routes.core.errors import is_discriminator_tag
from openai_routes.endpoints.completions.protocol import CompletionRequest
from openai_routes.endpoints.embeddings.protocol import EmbeddingCreateParams
from openai_routes.protocol.chat import ChatCompletionRequest, ChatMessage
from tests.unit.test_errors import error_for

USER: dict[str, Any] = {"role": "user", "content": "hi"}
CHAT: dict[str, Any] = {"model": "m", "messages": [USER]}
COMPLETION: dict[str, Any] = {"model": "m", "prompt": "x"}
EMBEDDING: dict[str, Any] = {"model": "m", "input": "x"}


def chat(**fields: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate({**CHAT, **fields})


def invalid(model: type[BaseModel], body: dict[str, Any]) -> ValidationError:
    with pytest.raises(ValidationError) as info:
        model.model_validate(body)
    return info.value


# --- fixed bounds ---------------------------------------------------------------------------------------------

BOUNDS: list[tuple[str, list[Any], list[Any]]] = [
    # field, accepted values, refused values
    ("temperature", [0, 2, 0.7, None], [-0.01, 2.01, "hot"]),
    ("top_p", [1, 0.01], [0, 1.01]),
    ("presence_penalty", [-2, 2], [-2.01, 2.01]),
    ("frequency_penalty", [-2, 2], [-2.01, 2.01]),
    ("n", [1, 100], [0, -1]),
    ("seed", [-(2**63), 2**63 - 1], [2**63, -(2**63) - 1]),
    ("max_tokens", [1, None], [0, -5]),
    ("max_completion_tokens", [1], [0]),
    ("top_k", [-1, 0, 40], [-2]),
    ("min_p", [0, 1], [-0.1, 1.1]),
    ("repetition_penalty", [0.5, 2], [0, 2.1]),
    ("min_tokens", [0, 5], [-1]),
    ("model", ["a"], [""]),
    ("stream", [True, False], ["sometimes"]),
]


@pytest.mark.parametrize(("name", "accepted", "refused"), BOUNDS, ids=[b[0] for b in BOUNDS])
def test_chat_bounds(name: str, accepted: list[Any], refused: list[Any]) -> None:
    for value in accepted:
        assert getattr(chat(**{name: value}), name) == value
    for value in refused:
        error = invalid(ChatCompletionRequest, {**CHAT, name: value})
        assert error.errors()[0]["loc"][0] == name


def test_top_logprobs_bounds_and_requires_logprobs() -> None:
    assert chat(logprobs=True, top_logprobs=0).top_logprobs == 0
    assert chat(logprobs=True, top_logprobs=20).top_logprobs == 20
    for value in (-1, 21):
        invalid(ChatCompletionRequest, {**CHAT, "logprobs": True, "top_logprobs": value})
    for logprobs in (False, None):
        body = {**CHAT, "top_logprobs": 2} if logprobs is None else {**CHAT, "logprobs": logprobs, "top_logprobs": 2}
        error = invalid(ChatCompletionRequest, body)
        assert "requires 'logprobs'" in str(error)


@pytest.mark.parametrize(("logprobs", "top", "engine"), [(False, None, None), (True, None, 0), (True, 3, 3)])
def test_engine_logprobs(logprobs: bool, top: int | None, engine: int | None) -> None:
    assert chat(logprobs=logprobs, top_logprobs=top).engine_logprobs == engine


@pytest.mark.parametrize("stop", [None, "END", [], ["a"], ["a", "b", "c", "d"]])
def test_stop_accepted(stop: Any) -> None:
    request = chat(stop=stop)
    expected = [stop] if isinstance(stop, str) else list(stop or [])
    assert request.stop_list() == expected


@pytest.mark.parametrize("stop", [["a", "b", "c", "d", "e"], "", ["a", ""], 5, [1]])
def test_stop_refused(stop: Any) -> None:
    invalid(ChatCompletionRequest, {**CHAT, "stop": stop})


@pytest.mark.parametrize("bias", [{"0": -100}, {"50256": 100, "7": 0.5}, {}, None])
def test_logit_bias_accepted(bias: dict[str, float] | None) -> None:
    assert chat(logit_bias=bias).logit_bias == bias


@pytest.mark.parametrize(
    "bias", [{"abc": 1}, {"-1": 1}, {"1.5": 1}, {"": 1}, {" 1": 1}, {"1": 100.5}, {"1": -101}, {str(2**64): 1}]
)
def test_logit_bias_refused(bias: dict[str, float]) -> None:
    invalid(ChatCompletionRequest, {**CHAT, "logit_bias": bias})


def test_requested_max_tokens_prefers_max_completion_tokens() -> None:
    assert chat().requested_max_tokens is None
    assert chat(max_tokens=5).requested_max_tokens == 5
    assert chat(max_tokens=5, max_completion_tokens=7).requested_max_tokens == 7


def test_include_usage() -> None:
    assert not chat().include_usage
    assert not chat(stream=True, stream_options={"include_usage": False}).include_usage
    assert chat(stream=True, stream_options={"include_usage": True}).include_usage


@pytest.mark.parametrize("model", [ChatCompletionRequest, CompletionRequest])
@pytest.mark.parametrize("stream", [None, False])
def test_stream_options_need_stream(model: type[BaseModel], stream: bool | None) -> None:
    base = CHAT if model is ChatCompletionRequest else COMPLETION
    body = {**base, "stream_options": {"include_usage": True}}
    if stream is not None:
        body["stream"] = stream
    error = invalid(model, body).errors()[0]
    assert error["loc"] == ("stream_options",)
    assert "only allowed when 'stream' is true" in error["msg"]
    assert model.model_validate({**base, "stream": stream, "stream_options": None})


# --- messages -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "message",
    [
        {"role": "system", "content": "s"},
        {"role": "developer", "content": "d"},
        {"role": "user", "content": ""},
        {"role": "assistant", "content": "a"},
        {
            "role": "assistant",
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
        },
        {"role": "tool", "content": "42", "tool_call_id": "c1"},
    ],
)
def test_roles_accepted(message: dict[str, Any]) -> None:
    assert ChatMessage.model_validate(message).role == message["role"]


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ({"role": "bot", "content": "x"}, "role"),
        ({"content": "x"}, "role"),
        ({"role": "user"}, "needs 'content'"),
        ({"role": "assistant"}, "needs 'content'"),
        ({"role": "assistant", "tool_calls": []}, "needs 'content'"),
        ({"role": "tool", "content": "42"}, "needs 'tool_call_id'"),
        ({"role": "tool", "content": "42", "tool_call_id": ""}, "needs 'tool_call_id'"),
    ],
)
def test_messages_refused(message: dict[str, Any], reason: str) -> None:
    assert reason in str(invalid(ChatMessage, message))


def test_messages_must_not_be_empty() -> None:
    invalid(ChatCompletionRequest, {"model": "m", "messages": []})
    invalid(ChatCompletionRequest, {"model": "m"})


def test_text_parts_are_joined() -> None:
    message = ChatMessage.model_validate(
        {"role": "user", "content": [{"type": "text", "text": "Hel"}, {"type": "text", "text": "lo", "extra": 1}]}
    )
    assert message.text() == "Hello"
    assert message.template_dict() == {"role": "user", "content": "Hello"}


@pytest.mark.parametrize(
    ("content", "loc"),
    [
        ([{"type": "text"}], ("content", 0, "text")),
        ([{"text": "x"}], ("content", 0, "type")),
        ([{"type": "video", "video": {}}], ("content", 0, "type")),
        (5, ("content",)),
        ({"text": "x"}, ("content",)),
    ],
)
def test_malformed_content_refused(content: Any, loc: tuple[Any, ...]) -> None:
    where = invalid(ChatMessage, {"role": "user", "content": content}).errors()[0]["loc"]
    assert tuple(part for part in where if not is_discriminator_tag(part)) == loc


@pytest.mark.parametrize(
    ("part", "kind"),
    [
        ({"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}, "audio"),
        ({"type": "file", "file": {"file_id": "f-1"}}, "file"),
    ],
)
def test_unsupported_parts_refused_at_the_part(part: dict[str, Any], kind: str) -> None:
    content = [{"type": "text", "text": "look"}, part]
    [error] = invalid(ChatMessage, {"role": "user", "content": content}).errors()
    assert tuple(part for part in error["loc"] if not is_discriminator_tag(part)) == ("content", 1)
    assert f"this model does not accept {kind} input" in error["msg"]


def test_string_content_is_one_text_part() -> None:
    message = ChatMessage.model_validate({"role": "user", "content": "hi"})
    assert message.text() == "hi"
    assert message.template_dict() == {"role": "user", "content": "hi"}


def test_template_dict() -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}
    assistant = ChatMessage.model_validate({"role": "assistant", "tool_calls": [call], "name": "bot"})
    rendered = assistant.template_dict()
    assert (rendered["role"], rendered["content"], rendered["name"]) == ("assistant", "", "bot")
    assert [(c["id"], c["function"]["name"]) for c in rendered["tool_calls"]] == [("c1", "f")]
    tool = ChatMessage.model_validate({"role": "tool", "content": "1", "tool_call_id": "c1"})
    assert tool.template_dict() == {"role": "tool", "content": "1", "tool_call_id": "c1"}
    developer = ChatMessage.model_validate({"role": "developer", "content": "rules"})
    assert developer.template_dict() == {"role": "system", "content": "rules"}


def test_unknown_fields_are_ignored() -> None:
    request = chat(
        messages=[{**USER, "audio": None, "cache_control": {"type": "ephemeral"}}],
        store=True,
        metadata={"k": "v"},
        service_tier="auto",
        user="u-1",
    )
    assert (request.user, request.store, request.metadata) == ("u-1", True, {"k": "v"})
    dumped = request.model_dump()
    assert "service_tier" not in dumped
    assert "cache_control" not in dumped["messages"][0]


# --- completions and embeddings -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prompt", "prompts"),
    [
        ("hello", ["hello"]),
        ("", [""]),
        (["a", "b"], ["a", "b"]),
        (["1", "2"], ["1", "2"]),
        ([1, 2, 3], [[1, 2, 3]]),
        ([[1, 2], [3]], [[1, 2], [3]]),
        ([0, 2**31 - 1], [[0, 2**31 - 1]]),
    ],
)
def test_prompt_shapes(prompt: Any, prompts: list[Any]) -> None:
    assert CompletionRequest.model_validate({**COMPLETION, "prompt": prompt}).prompts() == prompts
    assert EmbeddingCreateParams.model_validate({**EMBEDDING, "input": prompt}).inputs() == prompts


@pytest.mark.parametrize(
    "prompt", [[], [[]], [[1], []], [-1], [2**31], ["a", 1], [1, "a"], [["a"]], {"text": "x"}, None, 5, [1.5]]
)
def test_prompt_shapes_refused(prompt: Any) -> None:
    invalid(CompletionRequest, {**COMPLETION, "prompt": prompt})
    invalid(EmbeddingCreateParams, {**EMBEDDING, "input": prompt})


def test_completion_defaults_and_bounds() -> None:
    request = CompletionRequest.model_validate(COMPLETION)
    assert (request.max_tokens, request.echo, request.logprobs, request.n) == (16, False, None, 1)
    for field, value in (("max_tokens", 0), ("logprobs", 21), ("logprobs", -1), ("best_of", 0)):
        invalid(CompletionRequest, {**COMPLETION, field: value})
    assert CompletionRequest.model_validate({**COMPLETION, "logprobs": 20}).logprobs == 20
    invalid(CompletionRequest, {**COMPLETION, "prompt": None})
    invalid(CompletionRequest, {"model": "m"})


def test_completion_unsupported_options() -> None:
    assert "suffix" in str(invalid(CompletionRequest, {**COMPLETION, "suffix": "end"}))
    assert CompletionRequest.model_validate({**COMPLETION, "suffix": ""}).suffix == ""
    assert "best_of" in str(invalid(CompletionRequest, {**COMPLETION, "best_of": 2}))
    assert CompletionRequest.model_validate({**COMPLETION, "best_of": 2, "n": 2}).best_of == 2


def test_embedding_params() -> None:
    params = EmbeddingCreateParams.model_validate(EMBEDDING)
    assert (params.encoding_format, params.dimensions) == ("float", None)
    assert EmbeddingCreateParams.model_validate({**EMBEDDING, "encoding_format": "base64"}).encoding_format == "base64"
    for field, value in (("encoding_format", "int8"), ("dimensions", 0), ("model", "")):
        invalid(EmbeddingCreateParams, {**EMBEDDING, field: value})
    assert EmbeddingCreateParams.model_validate({**EMBEDDING, "whatever": 1}).inputs() == ["x"]


# --- conversion to engine options -----------------------------------------------------------------------------


def test_sampling_options_defaults() -> None:
    assert chat().sampling_options(10, None) == SamplingOptions(max_tokens=10)


def test_sampling_options_carry_every_field() -> None:
    request = chat(
        n=2,
        temperature=0.3,
        top_p=0.8,
        top_k=20,
        min_p=0.05,
        seed=-3,
        stop=["x", "y"],
        presence_penalty=0.5,
        frequency_penalty=-0.5,
        repetition_penalty=1.1,
        logit_bias={"11": -100, "7": 2.5},
        min_tokens=3,
        ignore_eos=True,
    )
    assert request.sampling_options(42, 4) == SamplingOptions(
        max_tokens=42,
        n=2,
        temperature=0.3,
        top_p=0.8,
        top_k=20,
        min_p=0.05,
        seed=-3,
        stop=("x", "y"),
        presence_penalty=0.5,
        frequency_penalty=-0.5,
        repetition_penalty=1.1,
        logit_bias={11: -100.0, 7: 2.5},
        logprobs=4,
        prompt_logprobs=None,
        min_tokens=3,
        ignore_eos=True,
    )


def test_sampling_options_stop_string_and_empty_bias() -> None:
    options = chat(stop="END", logit_bias={}).sampling_options(5, None)
    assert (options.stop, options.logit_bias) == (("END",), None)


def test_sampling_options_echo_logprobs() -> None:
    request = CompletionRequest.model_validate({**COMPLETION, "echo": True, "logprobs": 2})
    assert request.sampling_options(16, request.logprobs, echo_logprobs=True).prompt_logprobs == 2
    assert request.sampling_options(16, request.logprobs).prompt_logprobs is None
    assert request.sampling_options(16, None, echo_logprobs=True).prompt_logprobs is None


# --- as the client sees them ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "param", "message"),
    [
        (
            {
                **CHAT,
                "messages": [USER, {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "file"}]}],
            },
            "messages[1].content[1]",
            "this model does not accept file input",
        ),
        ({**CHAT, "stream_options": {"include_usage": True}}, "stream_options", "only allowed when 'stream' is true"),
    ],
)
def test_error_param_and_message(body: dict[str, Any], param: str, message: str) -> None:
    error = error_for(ChatCompletionRequest, body)
    assert (error.status, error.param) == (400, param)
    assert message in error.message


@pytest.mark.parametrize("field", ["top_k", "min_tokens"])
def test_sampling_ints_beyond_what_the_engine_can_serialize_are_refused(field: str) -> None:
    """Found by the schema fuzzer: top_k = 2**64 passed validation and failed inside vLLM's msgpack encoder (500)."""
    with pytest.raises(ValidationError):
        CompletionRequest.model_validate({"model": "m", "prompt": "x", field: 2**64})
    CompletionRequest.model_validate({"model": "m", "prompt": "x", field: 2**31 - 1})


@pytest.mark.parametrize("name", ["chat_template", "tools", "tokenize"])
def test_chat_template_kwargs_cannot_set_the_servers_template_arguments(name: str) -> None:
    from openai_routes.protocol.chat import ChatCompletionRequest

    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "chat_template_kwargs": {name: "x"}}
    with pytest.raises(pydantic.ValidationError, match=name):
        ChatCompletionRequest.model_validate(body)
    assert ChatCompletionRequest.model_validate({**body, "chat_template_kwargs": {"enable_thinking": False}})
