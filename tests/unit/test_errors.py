"""OpenAI's error envelope: validation errors as 400 with a clean ``param``, engine errors, unexpected faults."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from openai_routes.core.engine import EngineInputError, EngineUnavailableError
from openai_routes.core.errors import (
    APIError,
    as_api_error,
    context_length_exceeded,
    internal_error,
    invalid_api_key,
    model_not_found,
    service_unavailable,
    validation_error,
)
from openai_routes.endpoints.completions.protocol import CompletionRequest
from openai_routes.endpoints.embeddings.protocol import EmbeddingCreateParams
from openai_routes.protocol.chat import ChatCompletionRequest

SECRET = "SECRET-4f2a"
CHAT: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def request_error(model: type[BaseModel], body: Any) -> RequestValidationError:
    """The error FastAPI raises for ``body``: pydantic's errors with ``body`` in front of every ``loc``."""
    with pytest.raises(ValidationError) as info:
        model.model_validate(body)
    return RequestValidationError([{**error, "loc": ("body", *error["loc"])} for error in info.value.errors()])


def error_for(model: type[BaseModel], body: Any) -> APIError:
    error = validation_error(request_error(model, body))
    assert error.status == 400
    assert error.type == "invalid_request_error"
    return error


@pytest.mark.parametrize(
    ("model", "body", "param"),
    [
        (ChatCompletionRequest, {**CHAT, "messages": [{"role": "bot", "content": "x"}]}, "messages[0].role"),
        (
            ChatCompletionRequest,
            {**CHAT, "messages": [*CHAT["messages"], {"role": "tool", "content": "x"}]},
            "messages[1]",
        ),
        (
            ChatCompletionRequest,
            {**CHAT, "messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
            "messages[0].content[0].image_url",
        ),
        (ChatCompletionRequest, {**CHAT, "messages": [{"role": "user", "content": 7}]}, "messages[0].content"),
        (ChatCompletionRequest, {**CHAT, "temperature": 3}, "temperature"),
        (ChatCompletionRequest, {**CHAT, "stream_options": {"include_usage": "maybe"}}, "stream_options.include_usage"),
        (ChatCompletionRequest, {**CHAT, "logit_bias": {"12": 101}}, "logit_bias[12]"),
        (ChatCompletionRequest, {**CHAT, "top_logprobs": 2}, "top_logprobs"),
        (ChatCompletionRequest, {"model": "m"}, "messages"),
        (ChatCompletionRequest, {**CHAT, "messages": []}, "messages"),
        (CompletionRequest, {"model": "m", "prompt": "x", "suffix": "y"}, "suffix"),
        (CompletionRequest, {"model": "m", "prompt": "x", "best_of": 3}, "best_of"),
        (EmbeddingCreateParams, {"model": "m", "input": "x", "encoding_format": "int8"}, "encoding_format"),
    ],
)
def test_param_is_the_field_path(model: type[BaseModel], body: dict[str, Any], param: str) -> None:
    error = error_for(model, body)
    assert error.param == param
    assert error.message.startswith(f"Invalid value for '{param}': ")
    assert "Value error" not in error.message


@pytest.mark.parametrize(
    ("model", "body", "param"),
    [
        (ChatCompletionRequest, {**CHAT, "stop": 5}, "stop"),
        (ChatCompletionRequest, {**CHAT, "stop": ["a", "b", "c", "d", "e"]}, "stop"),
        (CompletionRequest, {"model": "m", "prompt": [-1]}, "prompt"),
        (CompletionRequest, {"model": "m", "prompt": [[1], []]}, "prompt"),
        (CompletionRequest, {"model": "m", "prompt": {"text": "x"}}, "prompt"),
        (EmbeddingCreateParams, {"model": "m", "input": []}, "input"),
    ],
)
def test_errors_inside_a_union_name_the_top_level_field(
    model: type[BaseModel], body: dict[str, Any], param: str
) -> None:
    assert error_for(model, body).param == param


@pytest.mark.parametrize(
    ("model", "body"),
    [
        (ChatCompletionRequest, {**CHAT, "temperature": SECRET}),
        (ChatCompletionRequest, {**CHAT, "messages": [{"role": SECRET, "content": "x"}]}),
        (ChatCompletionRequest, {**CHAT, "stop": [SECRET] * 5}),
        (ChatCompletionRequest, {**CHAT, "logit_bias": {SECRET: 1}}),
        (ChatCompletionRequest, {**CHAT, "n": SECRET}),
        (ChatCompletionRequest, {**CHAT, "messages": [{"role": "user", "content": [{"type": SECRET}]}]}),
        (CompletionRequest, {"model": "m", "prompt": {SECRET: SECRET}}),
        (EmbeddingCreateParams, {"model": "m", "input": "x", "encoding_format": SECRET}),
    ],
)
def test_the_input_is_never_echoed(model: type[BaseModel], body: dict[str, Any]) -> None:
    error = error_for(model, body)
    assert SECRET not in json.dumps(error.body())


@pytest.mark.parametrize("key", ["²", "¹⁰"])
def test_logit_bias_key_error_does_not_echo_the_key(key: str) -> None:
    """``SamplingRequest._token_ids`` checks keys with ``str.isdigit``, which accepts '²'; ``int('²')`` then
    raises inside the validator and pydantic reports ``invalid literal for int() with base 10: '²'``."""
    error = error_for(ChatCompletionRequest, {**CHAT, "logit_bias": {key: 1}})
    assert error.param == "logit_bias"
    assert key not in error.message


def test_the_deepest_error_is_reported() -> None:
    body = {**CHAT, "temperature": 9, "messages": [{"role": "user", "content": "x", "name": 5}]}
    assert error_for(ChatCompletionRequest, body).param == "messages[0].name"


@pytest.mark.parametrize("body", [[1, 2], "text", None, 3])
def test_a_body_that_is_not_an_object(body: Any) -> None:
    error = error_for(ChatCompletionRequest, body)
    assert (error.param, error.message) == (None, "The request body must be a JSON object.")


def test_malformed_json() -> None:
    exc = RequestValidationError(
        [{"type": "json_invalid", "loc": ("body", 10), "msg": "JSON decode error", "input": {}, "ctx": {"error": "x"}}]
    )
    error = validation_error(exc)
    assert (error.status, error.param, error.message) == (400, None, "The request body is not valid JSON.")


def test_no_errors_at_all() -> None:
    error = validation_error(RequestValidationError([]))
    assert (error.status, error.param) == (400, None)


# --- as_api_error ---------------------------------------------------------------------------------------------


def test_api_error_is_passed_through() -> None:
    error = APIError(409, "conflict", code="c", param="p")
    assert as_api_error(error) is error


def test_engine_input_error_is_400_with_its_param() -> None:
    error = as_api_error(EngineInputError("prompt has a token out of range", param="prompt"))
    assert (error.status, error.type, error.param, error.code) == (400, "invalid_request_error", "prompt", None)
    assert error.message == "prompt has a token out of range"


def test_engine_unavailable_is_503_with_retry_after() -> None:
    error = as_api_error(EngineUnavailableError("engine core died: stack trace"))
    assert (error.status, error.type, error.code) == (503, "server_error", "service_unavailable")
    assert "stack trace" not in error.message
    assert error.headers is not None and int(error.headers["Retry-After"]) > 0
    assert error.response().headers["retry-after"] == error.headers["Retry-After"]


def test_unexpected_error_is_500_with_a_request_id_only(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="openai_routes.core.errors"):
        error = as_api_error(KeyError(f"/srv/{SECRET}/weights"))
        other = as_api_error(RuntimeError(SECRET))
    assert (error.status, error.type, error.param, error.code) == (500, "server_error", None, None)
    assert SECRET not in error.message
    request_id = error.message.split("request id ")[1].rstrip(").")
    assert request_id.startswith("req-") and request_id not in other.message
    assert [record.exc_info is not None for record in caplog.records] == [True, True]
    assert request_id in caplog.records[0].getMessage()


# --- the envelope ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [
        APIError(400, "m"),
        invalid_api_key(),
        model_not_found("x/y"),
        context_length_exceeded(10, 8, 4, "messages"),
        service_unavailable(),
        internal_error("req-1"),
        as_api_error(EngineInputError("bad")),
    ],
)
def test_envelope_always_has_the_four_keys(error: APIError) -> None:
    response = error.response()
    body = json.loads(bytes(response.body))
    assert list(body) == ["error"]
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert response.status_code == error.status
    assert body == error.body()


def test_known_errors_have_openai_codes() -> None:
    key = invalid_api_key()
    assert (key.status, key.type, key.code, key.param) == (401, "invalid_request_error", "invalid_api_key", None)
    missing = model_not_found("org/m")
    assert (missing.status, missing.code, missing.param) == (404, "model_not_found", "model")
    assert missing.message == "The model `org/m` does not exist or you do not have access to it."


@pytest.mark.parametrize(("param", "where"), [("messages", "messages"), ("prompt", "prompt")])
def test_context_length_message(param: str, where: str) -> None:
    error = context_length_exceeded(2048, 2000, 100, param)
    assert (error.status, error.code, error.param) == (400, "context_length_exceeded", param)
    assert error.message == (
        "This model's maximum context length is 2048 tokens. However, you requested 2100 tokens "
        f"(2000 in the {where}, 100 in the completion). Please reduce the length of the messages or completion."
    )
