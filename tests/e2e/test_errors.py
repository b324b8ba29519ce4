"""Every error a client can provoke is OpenAI's envelope with the right status, code and param.

Raw HTTP shows the exact status and body; the SDK shows that the right exception class is raised. The last
test checks that the server still answers normally after all of them.
"""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest

from tests.e2e.conftest import CHAT_MODEL
from tests.e2e.server import Server

# Put in every bad request: a server that echoes the caller's input would put it in the error body.
SENTINEL = "sentinel-9f3a71c2"
MESSAGES = [{"role": "user", "content": f"Say hi. {SENTINEL}"}]
CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"


def envelope(response: httpx.Response, status: int) -> dict[str, Any]:
    """The ``error`` object of an OpenAI error response, after checking its status, media type and shape."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert list(body) == ["error"]
    error = body["error"]
    assert isinstance(error, dict) and set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["type"], str) and error["type"]
    assert error["param"] is None or isinstance(error["param"], str)
    assert error["code"] is None or isinstance(error["code"], str)
    assert SENTINEL not in response.text
    return error


def chat_body(**fields: Any) -> dict[str, Any]:
    return {"model": CHAT_MODEL, "messages": MESSAGES, "max_tokens": 4, **fields}


def completion_body(**fields: Any) -> dict[str, Any]:
    return {"model": CHAT_MODEL, "prompt": f"Say hi. {SENTINEL}", "max_tokens": 4, **fields}


# --- authentication ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer sk-wrong-key-0000"}, {"Authorization": "Basic dXNlcjpwYXNz"}],
    ids=["missing", "wrong", "not-bearer"],
)
@pytest.mark.parametrize("path", [CHAT, COMPLETIONS, "/v1/models"])
def test_bad_key_is_401(server: Server, headers: dict[str, str], path: str) -> None:
    method = "GET" if path == "/v1/models" else "POST"
    body = chat_body() if path == CHAT else completion_body()
    response = httpx.request(method, f"{server.base_url}{path}", headers=headers, json=body, timeout=60)
    error = envelope(response, 401)
    assert error == {**error, "type": "invalid_request_error", "code": "invalid_api_key", "param": None}
    assert "sk-wrong-key-0000" not in response.text


def test_wrong_key_raises_authentication_error(server: Server) -> None:
    bad = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="sk-wrong-key-0000", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as info:
        bad.chat.completions.create(model=CHAT_MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    assert info.value.status_code == 401
    assert info.value.code == "invalid_api_key"


# --- unknown model -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("path", [CHAT, COMPLETIONS])
def test_unknown_model_is_404(http: httpx.Client, path: str, stream: bool) -> None:
    base = chat_body() if path == CHAT else completion_body()
    response = http.post(path, json={**base, "model": "no-such-model", "stream": stream})
    error = envelope(response, 404)
    assert error["code"] == "model_not_found" and error["param"] == "model"
    assert error["type"] == "invalid_request_error"
    assert "no-such-model" in error["message"]


@pytest.mark.parametrize("stream", [False, True])
def test_unknown_model_raises_not_found(client: openai.OpenAI, stream: bool) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(
            model="no-such-model", messages=[{"role": "user", "content": "hi"}], max_tokens=2, stream=stream
        )
    assert info.value.code == "model_not_found" and info.value.param == "model"


# --- bad parameters ------------------------------------------------------------------------------------------

# The expected ``param``, or the names it may take when more than one is sensible.
Param = str | tuple[str, ...]

BAD_CHAT: list[tuple[str, dict[str, Any], Param]] = [
    ("temperature-3", chat_body(temperature=3), "temperature"),
    ("temperature-string", chat_body(temperature=SENTINEL), "temperature"),
    ("top_p-0", chat_body(top_p=0), "top_p"),
    ("n-0", chat_body(n=0), "n"),
    ("n-above-limit", chat_body(n=9), "n"),
    ("top_logprobs-21", chat_body(logprobs=True, top_logprobs=21), "top_logprobs"),
    ("top_logprobs-without-logprobs", chat_body(top_logprobs=2), "top_logprobs"),
    ("stop-list-of-5", chat_body(stop=[f"{SENTINEL}-{i}" for i in range(5)]), "stop"),
    ("max_tokens-0", chat_body(max_tokens=0), "max_tokens"),
    ("presence_penalty-3", chat_body(presence_penalty=3), "presence_penalty"),
    ("messages-empty", chat_body(messages=[]), "messages"),
    ("messages-missing", {"model": CHAT_MODEL, "max_tokens": 4}, "messages"),
    ("messages-not-a-list", chat_body(messages=SENTINEL), "messages"),
    ("wrong-role", chat_body(messages=[{"role": SENTINEL, "content": "hi"}]), "messages[0].role"),
    ("logit_bias-key", chat_body(logit_bias={SENTINEL: 1}), "logit_bias"),
    ("logit_bias-value", chat_body(logit_bias={"42": 101}), ("logit_bias", "logit_bias.42", "logit_bias[42]")),
    ("model-missing", {"messages": MESSAGES}, "model"),
]

BAD_COMPLETION: list[tuple[str, dict[str, Any], Param]] = [
    ("logprobs-21", completion_body(logprobs=21), "logprobs"),
    ("prompt-empty", completion_body(prompt=""), "prompt"),
    ("prompt-missing", {"model": CHAT_MODEL, "max_tokens": 4}, "prompt"),
    ("token-id-out-of-vocabulary", completion_body(prompt=[1, 2, 49152]), "prompt"),
    ("token-id-in-list-out-of-vocabulary", completion_body(prompt=[[1, 2], [999_999]]), "prompt"),
    ("n-above-limit", completion_body(n=9), "n"),
    ("stop-list-of-5", completion_body(stop=["a", "b", "c", "d", "e"]), "stop"),
    ("temperature-3", completion_body(temperature=3), "temperature"),
    ("suffix-unsupported", completion_body(suffix=SENTINEL), "suffix"),
    ("best_of-not-n", completion_body(best_of=3), "best_of"),
]


@pytest.mark.parametrize(("body", "param"), [(b, p) for _, b, p in BAD_CHAT], ids=[i for i, _, _ in BAD_CHAT])
def test_bad_chat_parameter_is_400(http: httpx.Client, body: dict[str, Any], param: Param) -> None:
    error = envelope(http.post(CHAT, json=body), 400)
    assert error["type"] == "invalid_request_error"
    assert error["param"] in ((param,) if isinstance(param, str) else param), error


@pytest.mark.parametrize(
    ("body", "param"), [(b, p) for _, b, p in BAD_COMPLETION], ids=[i for i, _, _ in BAD_COMPLETION]
)
def test_bad_completion_parameter_is_400(http: httpx.Client, body: dict[str, Any], param: Param) -> None:
    error = envelope(http.post(COMPLETIONS, json=body), 400)
    assert error["type"] == "invalid_request_error"
    assert error["param"] in ((param,) if isinstance(param, str) else param), error


def test_bad_parameter_raises_bad_request_error(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model=CHAT_MODEL, messages=[{"role": "user", "content": "hi"}], temperature=3, max_tokens=2
        )
    assert info.value.status_code == 400 and info.value.param == "temperature"


def test_bad_parameter_with_stream_is_plain_400(http: httpx.Client) -> None:
    with http.stream("POST", CHAT, json=chat_body(temperature=3, stream=True)) as response:
        response.read()
    assert envelope(response, 400)["param"] == "temperature"


# --- malformed bodies ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [b'{"model": "x", "messages": [', b"[1, 2, 3]", b'"just a string"', b"", f"not json {SENTINEL}".encode()],
    ids=["truncated", "array", "string", "empty", "garbage"],
)
@pytest.mark.parametrize("path", [CHAT, COMPLETIONS])
def test_malformed_json_is_400(http: httpx.Client, path: str, content: bytes) -> None:
    response = http.post(path, content=content, headers={"Content-Type": "application/json"})
    error = envelope(response, 400)
    assert error["type"] == "invalid_request_error"


# --- context length ------------------------------------------------------------------------------------------

LONG_TEXT = "lorem ipsum dolor sit amet " * 600  # ~3000 tokens, over max_model_len 2048

CONTEXT_CASES: list[tuple[str, str, dict[str, Any], str]] = [
    ("chat-long-prompt", CHAT, chat_body(messages=[{"role": "user", "content": LONG_TEXT}]), "messages"),
    (
        "chat-long-prompt-no-max",
        CHAT,
        {"model": CHAT_MODEL, "messages": [{"role": "user", "content": LONG_TEXT}]},
        "messages",
    ),
    ("chat-max_tokens-5000", CHAT, chat_body(max_tokens=5000), "messages"),
    ("chat-max_completion_tokens-5000", CHAT, chat_body(max_completion_tokens=5000), "messages"),
    ("completion-long-prompt", COMPLETIONS, completion_body(prompt=LONG_TEXT), "prompt"),
    ("completion-max_tokens-5000", COMPLETIONS, completion_body(max_tokens=5000), "prompt"),
    ("completion-second-prompt-long", COMPLETIONS, completion_body(prompt=["hi", LONG_TEXT]), "prompt"),
]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    ("path", "body", "param"), [(p, b, q) for _, p, b, q in CONTEXT_CASES], ids=[i for i, _, _, _ in CONTEXT_CASES]
)
def test_context_length_exceeded(http: httpx.Client, path: str, body: dict[str, Any], param: str, stream: bool) -> None:
    with http.stream("POST", path, json={**body, "stream": stream}) as response:
        response.read()
    error = envelope(response, 400)
    assert error["code"] == "context_length_exceeded" and error["param"] == param
    assert error["type"] == "invalid_request_error"
    assert error["message"].startswith("This model's maximum context length is 2048 tokens.")


def test_context_length_raises_bad_request_error_before_streaming(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model=CHAT_MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=5000, stream=True
        )
    assert info.value.code == "context_length_exceeded" and info.value.param == "messages"


# --- unknown routes and methods ------------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path"), [("GET", "/v1/nope"), ("POST", "/v1/nope"), ("GET", "/nope")])
def test_unknown_path_is_404(http: httpx.Client, method: str, path: str) -> None:
    error = envelope(http.request(method, path), 404)
    assert error["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    ("method", "path"), [("PUT", CHAT), ("GET", COMPLETIONS), ("DELETE", "/v1/models"), ("POST", "/v1/models")]
)
def test_wrong_method_is_405(http: httpx.Client, method: str, path: str) -> None:
    error = envelope(http.request(method, path), 405)
    assert error["type"] == "invalid_request_error"


# --- still healthy -------------------------------------------------------------------------------------------


def test_server_still_answers_after_the_errors(client: openai.OpenAI, http: httpx.Client) -> None:
    answer = client.chat.completions.create(
        model=CHAT_MODEL, messages=[{"role": "user", "content": "What is the capital of France?"}], temperature=0
    )
    assert answer.choices[0].message.content and "Paris" in answer.choices[0].message.content
    completion = client.completions.create(model=CHAT_MODEL, prompt="The capital of France is", max_tokens=4)
    assert completion.choices[0].text
    assert httpx.get(f"{http.base_url}/readyz").status_code == 200
    assert httpx.get(f"{http.base_url}/livez").status_code == 200
