"""Input the schema does not expect, on the limited server (``tests.e2e.limited``): hand-written hostile bodies, and
a sample of schemathesis' cases for every ``/v1`` operation through the real engine. Each gets an OpenAI error or an
answer, never a 5xx: the 10,000-case fuzz of the same schema runs in-process (``tests/unit/test_fuzz_schema.py``).
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.e2e.limited import CHAT, sdk, short_body
from tests.e2e.probes import envelope, wait_engine_idle
from tests.e2e.server import Server
from tests.e2e.servers import CHAT_MODEL
from tests.fuzzing import FuzzTally, fuzz_schema

# --- hostile bodies ------------------------------------------------------------------------------------------


def raw_chat(rest: bytes) -> bytes:
    """A chat body for the served model, written by hand from its second member on (``rest``)."""
    return b'{"model":"' + CHAT_MODEL.encode() + b'",' + rest


def saying(content: bytes) -> bytes:
    return b'"messages":[{"role":"user","content":"' + content + b'"}],"max_tokens":2}'


JSON = "application/json"
HOSTILE: dict[str, tuple[bytes, str]] = {
    "malformed": (raw_chat(b'"messages":[{"role":'), JSON),
    "nan": (raw_chat(saying(b"hi")[:-1] + b',"temperature":NaN}'), JSON),
    "infinity": (raw_chat(saying(b"hi")[:-1] + b',"top_p":-Infinity}'), JSON),
    "deep-nesting": (raw_chat(b'"messages":' + b"[" * 10000 + b"]" * 10000 + b"}"), JSON),
    "huge-integer": (raw_chat(saying(b"hi")[:-1] + b',"seed":' + b"9" * 5000 + b"}"), JSON),
    "huge-max-tokens": (
        raw_chat(b'"messages":[{"role":"user","content":"hi"}],"max_tokens":' + b"9" * 5000 + b"}"),
        JSON,
    ),
    "lone-surrogate": (raw_chat(saying(b"hi \\ud800")), JSON),
    "invalid-utf8": (raw_chat(saying(b"\xff\xfe")), JSON),
    "text-plain": (json.dumps(short_body()).encode(), "text/plain"),
    "empty": (b"", JSON),
    "array": (b"[" + json.dumps(short_body()).encode() + b"]", JSON),
    "null": (b"null", JSON),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_body_is_a_4xx_openai_error(limited_http: httpx.Client, name: str) -> None:
    raw, content_type = HOSTILE[name]
    response = limited_http.post(CHAT, content=raw, headers={"Content-Type": content_type})
    assert 400 <= response.status_code < 500, (response.status_code, response.text)
    error = envelope(response, response.status_code)
    assert error["type"] == "invalid_request_error"


def test_server_is_healthy_after_hostile_input(limited: Server) -> None:
    assert httpx.get(f"{limited.base_url}/readyz", timeout=30).status_code == 200
    reply = sdk(limited).chat.completions.create(**short_body())
    assert reply.choices[0].finish_reason in ("stop", "length")


# --- fuzzing the OpenAPI schema (a sample: the in-process fuzz sends over 10,000 cases) -----------------------

FUZZ_EXAMPLES = 30  # per operation and generation mode (GET /v1/models takes no input: one case)
SERVED_EXAMPLES = 40  # per generation endpoint, with the served model and a tiny completion
MINIMUM_CASES = 400


def limit_to_the_served_model(case: Any) -> None:
    """Cases that name the real model and ask for at most 4 tokens, so that they reach the engine."""
    if isinstance(case.body, dict):
        case.body["model"] = CHAT_MODEL
        for name in ("max_tokens", "max_completion_tokens"):
            if isinstance(case.body.get(name), int):
                case.body[name] = min(case.body[name], 4)
        case.body.setdefault("max_tokens", 4)


@pytest.mark.slow
@pytest.mark.stress
def test_a_fuzz_sample_through_the_real_engine_never_gets_a_5xx(limited: Server) -> None:
    import requests
    import schemathesis

    headers = {"Authorization": f"Bearer {limited.api_key}"}
    schema = schemathesis.openapi.from_url(f"{limited.base_url}/v1/openapi.json", headers=headers, timeout=60)
    with requests.Session() as session:

        def send(case: Any) -> tuple[int, str]:
            try:
                response = case.call(base_url=f"{limited.base_url}/v1", session=session, headers=headers, timeout=60)
            except requests.RequestException as exc:  # a hang or a dropped connection is a failure too
                return 599, repr(exc)
            return response.status_code, response.text

        schema_wide, served = FuzzTally(), FuzzTally()
        fuzz_schema(schema, FUZZ_EXAMPLES, send, schema_wide)
        generation = ("POST /chat/completions", "POST /completions")
        fuzz_schema(
            schema, SERVED_EXAMPLES, send, served, labels=generation, negative=False, adapt=limit_to_the_served_model
        )
    print(f"\nfuzz sample: schema-wide {schema_wide.summary()}; served-model {served.summary()}")
    failures = schema_wide.failures + served.failures
    assert not failures, f"{len(failures)} failing cases:\n" + "\n".join(failures[:20])
    assert schema_wide.cases + served.cases >= MINIMUM_CASES
    assert served.statuses[200] > 0, "no fuzz case reached the engine"
    assert httpx.get(f"{limited.base_url}/readyz", timeout=30).status_code == 200
    wait_engine_idle(limited, CHAT_MODEL, timeout=30)
