"""JSON ``null`` means "not given" for every request field the installed ``openai`` SDK lets a client omit.

The field lists are read from the SDK's request TypedDicts with ``typing.get_type_hints``, so a new SDK field,
or one our models forget, fails here. Every key that is not ``Required`` (which includes every key whose
annotation admits ``None``) must validate with ``null`` exactly as if it were absent: the default applies.
Fields we do not model are ignored, for ``null`` too. The same holds inside nested objects.
"""

from __future__ import annotations

import copy
import types
import typing
from typing import Annotated, Any, NotRequired, Required

import pytest
from openai.types import completion_create_params, embedding_create_params
from openai.types.chat import ChatCompletionStreamOptionsParam
from openai.types.chat import completion_create_params as chat_create_params
from openai.types.chat.chat_completion_assistant_message_param import ChatCompletionAssistantMessageParam
from openai.types.chat.chat_completion_developer_message_param import ChatCompletionDeveloperMessageParam
from openai.types.chat.chat_completion_system_message_param import ChatCompletionSystemMessageParam
from openai.types.chat.chat_completion_user_message_param import ChatCompletionUserMessageParam
from openai.types.shared_params.function_definition import FunctionDefinition
from openai.types.shared_params.response_format_json_schema import JSONSchema
from pydantic import BaseModel, ValidationError

from openai_routes.endpoints.completions.protocol import CompletionRequest
from openai_routes.endpoints.embeddings.protocol import EmbeddingCreateParams
from openai_routes.protocol.chat import ChatCompletionRequest

CHAT: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
COMPLETION: dict[str, Any] = {"model": "m", "prompt": "x"}
EMBEDDING: dict[str, Any] = {"model": "m", "input": "x"}

# endpoint -> (our request model, a minimal valid body, the SDK's request TypedDicts: each variant of the overload)
ENDPOINTS: dict[str, tuple[type[BaseModel], dict[str, Any], tuple[type, ...]]] = {
    "chat": (
        ChatCompletionRequest,
        CHAT,
        (chat_create_params.CompletionCreateParamsNonStreaming, chat_create_params.CompletionCreateParamsStreaming),
    ),
    "completions": (
        CompletionRequest,
        COMPLETION,
        (
            completion_create_params.CompletionCreateParamsNonStreaming,
            completion_create_params.CompletionCreateParamsStreaming,
        ),
    ),
    "embeddings": (EmbeddingCreateParams, EMBEDDING, (embedding_create_params.EmbeddingCreateParams,)),
}

# Required by the SDK yet typed as admitting None: null is refused as a missing value (no sensible default).
REQUIRED_NULLABLE = {"completions": {"prompt"}}


def hints(typed_dict: type) -> dict[str, Any]:
    return typing.get_type_hints(typed_dict, include_extras=True)


def unwrap(hint: Any) -> Any:
    while typing.get_origin(hint) in (Required, NotRequired, Annotated):
        hint = typing.get_args(hint)[0]
    return hint


def is_required(hint: Any) -> bool:
    while typing.get_origin(hint) is Annotated:
        hint = typing.get_args(hint)[0]
    return typing.get_origin(hint) is Required


def admits_none(hint: Any) -> bool:
    hint = unwrap(hint)
    return hint is types.NoneType or types.NoneType in typing.get_args(hint)


def optional_keys(*typed_dicts: type) -> set[str]:
    """Keys a client may leave out in at least one variant (``stream`` is required only when streaming)."""
    return {key for td in typed_dicts for key, hint in hints(td).items() if not is_required(hint)}


def nullable_keys(*typed_dicts: type) -> set[str]:
    return {key for td in typed_dicts for key, hint in hints(td).items() if admits_none(hint)}


def same_as_absent(model: type[BaseModel], body: dict[str, Any], path: tuple[str | int, ...], key: str) -> None:
    """``body`` with ``key`` (inside the object at ``path``) set to null validates as ``body`` without it."""
    with_null, without = copy.deepcopy(body), copy.deepcopy(body)
    target_null: Any = with_null
    target_without: Any = without
    for step in path:
        target_null, target_without = target_null[step], target_without[step]
    target_null[key] = None
    target_without.pop(key, None)
    assert model.model_validate(with_null).model_dump() == model.model_validate(without).model_dump()


TOP_LEVEL = [(name, key) for name, (_, _, tds) in ENDPOINTS.items() for key in sorted(optional_keys(*tds))]


@pytest.mark.parametrize(("endpoint", "key"), TOP_LEVEL, ids=[f"{e}-{k}" for e, k in TOP_LEVEL])
def test_top_level_null_means_not_given(endpoint: str, key: str) -> None:
    model, body, _ = ENDPOINTS[endpoint]
    same_as_absent(model, body, (), key)


def test_the_sdk_sets_are_read() -> None:
    """The derivation finds the fields the issue names, so the parametrized test above is not empty."""
    chat = ENDPOINTS["chat"][2]
    assert {"n", "stream", "logprobs", "top_logprobs", "max_tokens", "stream_options"} <= nullable_keys(*chat)
    assert nullable_keys(*chat) <= optional_keys(*chat)
    assert {"parallel_tool_calls", "user", "tools", "tool_choice", "response_format"} <= optional_keys(*chat)
    completions = ENDPOINTS["completions"][2]
    assert {"n", "stream", "logprobs", "echo", "best_of", "suffix", "max_tokens"} <= nullable_keys(*completions)
    assert {"dimensions", "encoding_format", "user"} <= optional_keys(*ENDPOINTS["embeddings"][2])


@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
def test_required_keys_that_admit_none_are_known(endpoint: str) -> None:
    """A field the SDK requires but lets be null is a decision to make, not to inherit silently."""
    model, body, tds = ENDPOINTS[endpoint]
    required_nullable = {
        key for td in tds for key, hint in hints(td).items() if is_required(hint) and admits_none(hint)
    }
    assert required_nullable == REQUIRED_NULLABLE.get(endpoint, set())
    for key in required_nullable:
        with pytest.raises(ValidationError) as info:
            model.model_validate({**body, key: None})
        assert info.value.errors()[0]["loc"][0] == key


# Nested objects: (id, our request model, a body that fills the object, the path to it, its SDK TypedDict).
TOOL = {
    "type": "function",
    "function": {"name": "f", "description": "d", "parameters": {"type": "object"}, "strict": True},
}
JSON_SCHEMA = {"name": "r", "description": "d", "schema": {"type": "object"}, "strict": True}
CALL = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
NESTED: list[tuple[str, type[BaseModel], dict[str, Any], tuple[str | int, ...], type]] = [
    (
        "chat-stream_options",
        ChatCompletionRequest,
        {**CHAT, "stream": True, "stream_options": {"include_usage": True}},
        ("stream_options",),
        ChatCompletionStreamOptionsParam,
    ),
    (
        "completions-stream_options",
        CompletionRequest,
        {**COMPLETION, "stream": True, "stream_options": {"include_usage": True}},
        ("stream_options",),
        ChatCompletionStreamOptionsParam,
    ),
    ("tools-function", ChatCompletionRequest, {**CHAT, "tools": [TOOL]}, ("tools", 0, "function"), FunctionDefinition),
    (
        "response_format-json_schema",
        ChatCompletionRequest,
        {**CHAT, "response_format": {"type": "json_schema", "json_schema": JSON_SCHEMA}},
        ("response_format", "json_schema"),
        JSONSchema,
    ),
    (
        "user-message",
        ChatCompletionRequest,
        {**CHAT, "messages": [{"role": "user", "content": "hi", "name": "u"}]},
        ("messages", 0),
        ChatCompletionUserMessageParam,
    ),
    (
        "system-message",
        ChatCompletionRequest,
        {**CHAT, "messages": [{"role": "system", "content": "s", "name": "u"}, *CHAT["messages"]]},
        ("messages", 0),
        ChatCompletionSystemMessageParam,
    ),
    (
        "developer-message",
        ChatCompletionRequest,
        {**CHAT, "messages": [{"role": "developer", "content": "s", "name": "u"}, *CHAT["messages"]]},
        ("messages", 0),
        ChatCompletionDeveloperMessageParam,
    ),
    (
        # content and tool_calls both given: either alone is a complete assistant message
        "assistant-message",
        ChatCompletionRequest,
        {
            **CHAT,
            "messages": [*CHAT["messages"], {"role": "assistant", "content": "a", "name": "b", "tool_calls": [CALL]}],
        },
        ("messages", 1),
        ChatCompletionAssistantMessageParam,
    ),
]
NESTED_KEYS = [(case, key) for case in NESTED for key in sorted(optional_keys(case[4]))]


@pytest.mark.parametrize("case", NESTED, ids=[case[0] for case in NESTED])
def test_nested_cases_have_optional_keys(
    case: tuple[str, type[BaseModel], dict[str, Any], tuple[str | int, ...], type],
) -> None:
    _, model, body, _, typed_dict = case
    assert optional_keys(typed_dict), "nothing to check: drop this case"
    model.model_validate(body)


@pytest.mark.parametrize(("case", "key"), NESTED_KEYS, ids=[f"{case[0]}-{key}" for case, key in NESTED_KEYS])
def test_nested_null_means_not_given(
    case: tuple[str, type[BaseModel], dict[str, Any], tuple[str | int, ...], type], key: str
) -> None:
    _, model, body, path, _ = case
    same_as_absent(model, body, path, key)


@pytest.mark.parametrize(
    ("field", "default"),
    [("n", 1), ("stream", False), ("logprobs", False), ("parallel_tool_calls", True), ("max_tokens", None)],
)
def test_chat_null_takes_the_default(field: str, default: Any) -> None:
    assert getattr(ChatCompletionRequest.model_validate({**CHAT, field: None}), field) == default


@pytest.mark.parametrize(
    ("field", "default"), [("n", 1), ("stream", False), ("logprobs", None), ("echo", False), ("max_tokens", 16)]
)
def test_completion_null_takes_the_default(field: str, default: Any) -> None:
    assert getattr(CompletionRequest.model_validate({**COMPLETION, field: None}), field) == default


def test_nested_null_takes_the_default() -> None:
    request = ChatCompletionRequest.model_validate(
        {
            **CHAT,
            "stream": True,
            "stream_options": {"include_usage": None},
            "tools": [{"type": "function", "function": {"name": "f", "description": None, "parameters": None}}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "r", "schema": None, "strict": None}},
        }
    )
    assert request.stream_options is not None and request.stream_options.include_usage is False
    assert request.tools is not None and request.tools[0].function.description is None
    assert request.response_format is not None and request.response_format.json_schema is not None
    assert request.response_format.json_schema.schema_ == {"type": "object"}
    assert request.response_format.json_schema.strict is None


@pytest.mark.parametrize(("body", "field"), [(CHAT, "model"), (CHAT, "messages"), (EMBEDDING, "input")])
def test_null_for_a_required_field_is_refused(body: dict[str, Any], field: str) -> None:
    model = ChatCompletionRequest if body is CHAT else EmbeddingCreateParams
    with pytest.raises(ValidationError) as info:
        model.model_validate({**body, field: None})
    assert info.value.errors()[0]["loc"][0] == field
