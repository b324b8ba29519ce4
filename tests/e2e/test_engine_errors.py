"""Engine errors keep their meaning through the real service: vLLM's validation errors keep their ``param`` and
echo nothing back, a schema xgrammar cannot compile is a 400 naming the schema's field (no C++ source path), and
vLLM's own queue overflow (``max_num_queued_reqs``) is 503 with ``Retry-After``, while other requests carry on.
"""

from __future__ import annotations

import asyncio
import collections
import re
from typing import Any

import httpx
import openai
import pytest

from tests.e2e.conftest import CHAT_MODEL
from tests.e2e.pool import ServerPool
from tests.e2e.probes import envelope, wait_engine_idle
from tests.e2e.server import Server

CHAT = "/v1/chat/completions"
USER = [{"role": "user", "content": "Describe a cat."}]
UNCOMPILABLE = [
    {"$ref": "#/$defs/missing"},
    {"type": "object", "properties": {"code": {"type": "string", "pattern": "(?<=a)b"}}, "required": ["code"]},
    {"type": "array", "items": {"type": "integer"}, "minItems": 3, "maxItems": 1},
]


def assert_plain(message: str) -> None:
    assert ".cc" not in message and "/project" not in message and "Traceback" not in message, message
    assert not re.search(r"\[\d\d:\d\d:\d\d\]", message), message


@pytest.mark.parametrize("schema", UNCOMPILABLE)
def test_response_format_schema_the_grammar_cannot_compile_is_400(http: httpx.Client, schema: dict[str, Any]) -> None:
    response_format = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    response = http.post(CHAT, json={"model": CHAT_MODEL, "messages": USER, "response_format": response_format})
    error = envelope(response, 400)
    assert error["param"] == "response_format.json_schema.schema"
    assert error["message"].startswith("The JSON schema in 'response_format.json_schema.schema' cannot be enforced")
    assert_plain(error["message"])


@pytest.mark.parametrize(("tool_choice", "param"), [("required", "tools"), ("named", "tools[1].function.parameters")])
def test_tool_schema_the_grammar_cannot_compile_is_400(http: httpx.Client, tool_choice: str, param: str) -> None:
    good = {"type": "function", "function": {"name": "ok", "parameters": {"type": "object"}}}
    bad = {"type": "function", "function": {"name": "broken", "parameters": UNCOMPILABLE[1]}}
    choice: Any = tool_choice if tool_choice == "required" else {"type": "function", "function": {"name": "broken"}}
    body = {"model": CHAT_MODEL, "messages": USER, "tools": [good, bad], "tool_choice": choice, "stream": True}
    error = envelope(http.post(CHAT, json=body), 400)  # a plain 400 before any byte, though streamed
    assert error["param"] == param
    assert_plain(error["message"])


@pytest.mark.parametrize(
    ("fields", "param", "echoed"),
    [
        ({"logit_bias": {"987654": 5}}, "logit_bias", "987654"),
        ({"max_tokens": 4, "min_tokens": 9}, "min_tokens", "9"),
    ],
)
def test_vllm_validation_errors_keep_their_param_and_echo_nothing(
    http: httpx.Client, fields: dict[str, Any], param: str, echoed: str
) -> None:
    error = envelope(http.post(CHAT, json={"model": CHAT_MODEL, "messages": USER, **fields}), 400)
    assert error["param"] == param
    assert echoed not in error["message"], error["message"]
    assert_plain(error["message"])


def test_the_sdk_raises_bad_request_for_an_uncompilable_schema(client: openai.OpenAI) -> None:
    response_format: Any = {"type": "json_schema", "json_schema": {"name": "x", "schema": UNCOMPILABLE[0]}}
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model=CHAT_MODEL, messages=[{"role": "user", "content": "Describe a cat."}], response_format=response_format
        )
    assert info.value.param == "response_format.json_schema.schema"
    reply = client.chat.completions.create(model=CHAT_MODEL, messages=USER, max_tokens=4)  # type: ignore[arg-type]
    assert reply.choices[0].message.content


# --- vLLM's own queue ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def engine_queue(pool: ServerPool) -> Server:
    """``tests/configs/generation-defaults.yaml``: the chat weights with vLLM's queue of 2 (test_hermes' engine)."""
    return pool.get("generation-defaults")


QUEUE_MODEL = "smollm2-hermes"  # its chat template renders tools the Hermes way; this test sends none


@pytest.mark.slow
async def test_engine_queue_overflow_is_503_with_retry_after(engine_queue: Server) -> None:
    headers = {"Authorization": f"Bearer {engine_queue.api_key}"}
    body = {"model": QUEUE_MODEL, "messages": USER, "max_tokens": 48, "ignore_eos": True}
    async with httpx.AsyncClient(base_url=engine_queue.base_url, headers=headers, timeout=120) as session:
        responses = await asyncio.gather(*(session.post(CHAT, json=body) for _ in range(5)))
    statuses = collections.Counter(response.status_code for response in responses)
    assert statuses[200] >= 2 and statuses[503] >= 1 and set(statuses) <= {200, 503}, statuses
    for response in responses:
        if response.status_code == 503:
            error = envelope(response, 503)
            assert error["code"] == "service_unavailable"
            assert "busy" in error["message"]
            assert int(response.headers["retry-after"]) > 0
    wait_engine_idle(engine_queue, QUEUE_MODEL, timeout=30)
    sdk = openai.OpenAI(base_url=f"{engine_queue.base_url}/v1", api_key=engine_queue.api_key, max_retries=0)
    assert sdk.chat.completions.create(model=QUEUE_MODEL, messages=USER, max_tokens=4).choices  # type: ignore[arg-type]
