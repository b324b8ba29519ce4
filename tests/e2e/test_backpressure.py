"""Backpressure, request limits, hostile input, fuzzing and engine death, on a server with small limits.

``tests/configs/limited.yaml`` serves the chat model only, with 2 requests in flight plus 2 queued (429 with
``Retry-After: 2`` beyond), ``max_tokens`` <= 256, ``n`` <= 2 and 64 KiB bodies. The engine-failure test kills the
engine, so it runs last in this module and the module's server is not reused.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import signal
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import openai
import psutil
import pytest

from tests.e2e.conftest import CHAT_MODEL
from tests.e2e.probes import (
    endless_response,
    engine_running,
    engine_running_in,
    envelope,
    own_server,
    wait_engine_idle,
    wait_for,
)
from tests.e2e.server import Server, still_alive

LIMITED_CONFIG = "tests/configs/limited.yaml"
MAX_BODY = 65536
RETRY_AFTER = "2"
ADMITTED = 4  # max_in_flight 2 + max_queued 2
MAX_TOKENS = 256  # the config's cap: an admitted request generates for seconds, so saturation outlasts the probes
CHAT = "/v1/chat/completions"
MESSAGES = [{"role": "user", "content": "Write a long story about a lighthouse keeper."}]


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with own_server(LIMITED_CONFIG, tmp_path_factory.mktemp("limited")) as server:
        yield server


@pytest.fixture(scope="module")
def limited_http(limited: Server) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {limited.api_key}"}
    with httpx.Client(base_url=limited.base_url, headers=headers, timeout=120) as session:
        yield session


def sdk(server: Server, timeout: float = 120) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=server.api_key, max_retries=0, timeout=timeout)


def long_body() -> dict[str, Any]:
    return {"model": CHAT_MODEL, "messages": MESSAGES, "max_tokens": MAX_TOKENS, "ignore_eos": True}


def long_sdk_call() -> dict[str, Any]:
    """``long_body`` as SDK arguments (it refuses unknown keywords: vLLM's ``ignore_eos`` goes in ``extra_body``)."""
    return {"model": CHAT_MODEL, "messages": MESSAGES, "max_tokens": MAX_TOKENS, "extra_body": {"ignore_eos": True}}


def short_body(**fields: Any) -> dict[str, Any]:
    return {"model": CHAT_MODEL, "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 4, **fields}


# --- admission control ---------------------------------------------------------------------------------------


@dataclass
class Timed:
    response: httpx.Response
    seconds: float


async def timed_post(session: httpx.AsyncClient, body: dict[str, Any]) -> Timed:
    started = time.monotonic()
    response = await session.post(CHAT, json=body)
    return Timed(response, time.monotonic() - started)


async def probe_while_saturated(session: httpx.AsyncClient, model: str) -> dict[str, tuple[int, float]]:
    """Status and seconds of the health, metrics and model-list endpoints; also the engine gauge."""
    answers: dict[str, tuple[int, float]] = {}
    for path in ("/livez", "/readyz", "/metrics", "/v1/models"):
        started = time.monotonic()
        response = await session.get(path)
        answers[path] = (response.status_code, time.monotonic() - started)
        if path == "/metrics":
            running = engine_running_in(response.text, model)
            assert 1 <= running <= 2, f"the engine runs {running} requests; the in-flight cap is 2"
    return answers


async def test_saturation_gives_exactly_four_200s_and_six_fast_429s(limited: Server) -> None:
    headers = {"Authorization": f"Bearer {limited.api_key}"}
    pool = httpx.Limits(max_connections=32, max_keepalive_connections=32)
    async with httpx.AsyncClient(base_url=limited.base_url, headers=headers, timeout=120, limits=pool) as session:
        tasks = [asyncio.create_task(timed_post(session, long_body())) for _ in range(10)]
        try:
            started = time.monotonic()
            while sum(task.done() for task in tasks) < 10 - ADMITTED:
                assert time.monotonic() - started < 60, "the 429s did not come"
                await asyncio.sleep(0.05)
            assert not all(task.done() for task in tasks), "nothing left in flight: the test did not saturate"
            # The 429s come before the admitted requests have been rendered and submitted: wait until they have.
            await asyncio.to_thread(wait_for, lambda: engine_running(limited.base_url, CHAT_MODEL) >= 1, 30, "running")
            answers = await probe_while_saturated(session, CHAT_MODEL)
            with pytest.raises(openai.RateLimitError) as info:  # the SDK's view of the same answer, while saturated
                await openai.AsyncOpenAI(
                    base_url=f"{limited.base_url}/v1", api_key=limited.api_key, max_retries=0, timeout=60
                ).chat.completions.create(**long_sdk_call())
            still_saturated = not all(task.done() for task in tasks)
        finally:
            results = await asyncio.gather(*tasks)
    statuses = collections.Counter(result.response.status_code for result in results)
    ok = [result for result in results if result.response.status_code == 200]
    refused = [result for result in results if result.response.status_code == 429]
    print(
        f"\nbackpressure: {dict(statuses)}; 429s in {max(r.seconds for r in refused):.2f} s at most, "
        f"200s in {min(r.seconds for r in ok):.1f}-{max(r.seconds for r in ok):.1f} s; "
        + ", ".join(f"{path} {status} in {seconds:.2f} s" for path, (status, seconds) in answers.items())
    )
    assert statuses == {200: ADMITTED, 429: 10 - ADMITTED}
    for result in refused:
        error = envelope(result.response, 429)
        assert error["code"] == "rate_limit_exceeded"
        assert result.response.headers["retry-after"] == RETRY_AFTER
        assert result.seconds < 5
    assert max(r.seconds for r in refused) < min(r.seconds for r in ok), "a 429 waited for a generation"
    for result in ok:
        reply = result.response.json()
        assert reply["choices"][0]["finish_reason"] == "length"
        assert reply["usage"]["completion_tokens"] == MAX_TOKENS
    assert info.value.status_code == 429 and info.value.code == "rate_limit_exceeded"
    assert info.value.response.headers["retry-after"] == RETRY_AFTER
    assert still_saturated, "the SDK call came after the saturation ended"
    for path, (status, seconds) in answers.items():
        assert status == 200, path
        assert seconds < 5, f"{path} took {seconds:.1f} s under load"


def test_capacity_is_back_after_saturation(limited: Server, limited_http: httpx.Client) -> None:
    wait_engine_idle(limited, CHAT_MODEL, timeout=30)
    assert limited_http.post(CHAT, json=short_body()).status_code == 200


def test_a_background_response_at_capacity_is_answered_at_once_queued(limited: Server) -> None:
    """With both running places taken, a background response is not held in its POST: it is answered queued, waits
    in the admission queue without its client, and starts when a place frees (a cancel here)."""
    wait_engine_idle(limited, CHAT_MODEL, timeout=30)
    client = sdk(limited)
    body = {**endless_response(background=True), "max_output_tokens": MAX_TOKENS}
    running = [client.responses.create(model=CHAT_MODEL, **body) for _ in range(2)]
    try:
        wait_for(lambda: engine_running(limited.base_url, CHAT_MODEL) == 2, 30, "both background runs in the engine")
        started = time.monotonic()
        queued = client.responses.create(model=CHAT_MODEL, **body)
        answered = time.monotonic() - started
        running.append(queued)
        print(f"\nbackground at capacity: answered {queued.status} in {answered:.2f} s")
        assert queued.status == "queued" and answered < 5
        assert client.responses.retrieve(queued.id).status == "queued"
        assert engine_running(limited.base_url, CHAT_MODEL) == 2
        assert client.responses.cancel(running[0].id).status == "cancelled"
        wait_for(lambda: client.responses.retrieve(queued.id).status == "in_progress", 30, "the queued one to start")
    finally:
        for response in running:
            with contextlib.suppress(openai.BadRequestError):  # already finished or cancelled
                client.responses.cancel(response.id)
    wait_engine_idle(limited, CHAT_MODEL, timeout=30)


async def test_admission_counts_engine_sequences_not_requests(limited: Server) -> None:
    """Room for 2 sequences plus 2 queued: a completion of 2 prompts fills the engine, a chat with n=2 fills the
    queue, and a third request gets 429 at once (counting requests, it would have been admitted)."""
    headers = {"Authorization": f"Bearer {limited.api_key}"}
    completion = {"model": CHAT_MODEL, "prompt": ["Once upon a time", "In a galaxy"], "max_tokens": MAX_TOKENS,
                  "ignore_eos": True}  # fmt: skip
    async with httpx.AsyncClient(base_url=limited.base_url, headers=headers, timeout=120) as session:
        running = asyncio.create_task(session.post("/v1/completions", json=completion))
        await asyncio.to_thread(wait_for, lambda: engine_running(limited.base_url, CHAT_MODEL) == 2, 30, "2 running")
        queued = asyncio.create_task(session.post(CHAT, json={**long_body(), "n": 2}))
        await asyncio.sleep(0.5)
        refused = await session.post(CHAT, json=short_body())
        held = engine_running(limited.base_url, CHAT_MODEL)
        results = await asyncio.gather(running, queued)
    error = envelope(refused, 429)
    assert error["code"] == "rate_limit_exceeded"
    assert held == 2, f"the engine held {held} sequences; the cap is 2"
    assert [result.status_code for result in results] == [200, 200]
    assert len(results[1].json()["choices"]) == 2


# --- body size -----------------------------------------------------------------------------------------------


def oversized_body() -> bytes:
    body = {"model": CHAT_MODEL, "messages": [{"role": "user", "content": "a" * (MAX_BODY + 4096)}], "max_tokens": 4}
    return json.dumps(body).encode()


def test_oversized_chunked_body_is_413(limited_http: httpx.Client) -> None:
    def chunks() -> Iterator[bytes]:  # a generator: httpx sends it chunked, without Content-Length
        body = oversized_body()
        for start in range(0, len(body), 4096):
            yield body[start : start + 4096]

    response = limited_http.post(CHAT, content=chunks(), headers={"Content-Type": "application/json"})
    assert "content-length" not in response.request.headers
    assert envelope(response, 413)["code"] == "request_too_large"


def raw_post(server: Server, headers: list[str], payload: bytes, timeout: float = 60) -> tuple[int, bytes]:
    """POST over a bare socket (httpx refuses to send a body that contradicts its headers): status and body."""
    head = [f"POST {CHAT} HTTP/1.1", "Host: localhost", f"Authorization: Bearer {server.api_key}"]
    head += ["Content-Type: application/json", "Connection: close", *headers]
    with socket.create_connection((server.host, server.port), timeout=timeout) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # it may answer before reading it all
            sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + payload)
        received = b""
        while b"\r\n\r\n" not in received or len(received.partition(b"\r\n\r\n")[2]) < content_length(received):
            data = sock.recv(65536)
            if not data:
                break
            received += data
    status_line, _, rest = received.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


def content_length(received: bytes) -> int:
    for line in received.partition(b"\r\n\r\n")[0].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value.strip())
    return 1 << 30  # unknown: read until the server closes


def test_declared_length_is_not_trusted(limited: Server) -> None:
    """The body is counted as it arrives: a huge declared length gets 413 once 64 KiB have come, without
    waiting for the rest; a small lying length never lets more bytes in than it declares (they are not the
    body, so no 413 is possible: the truncated JSON is a 400); both framings at once are refused."""
    body = oversized_body()
    status, answer = raw_post(limited, ["Content-Length: 10000000"], body)
    assert status == 413 and json.loads(answer)["error"]["code"] == "request_too_large"
    status, answer = raw_post(limited, ["Content-Length: 100"], body)
    assert status == 400 and json.loads(answer)["error"]["type"] == "invalid_request_error"
    status, _ = raw_post(limited, ["Content-Length: 100", "Transfer-Encoding: chunked"], body)
    assert status == 400


# --- request limits ------------------------------------------------------------------------------------------


def many_messages(count: int) -> bytes:
    body = {"model": CHAT_MODEL, "messages": [{"role": "user", "content": "x"}] * count, "max_tokens": 4}
    raw = json.dumps(body, separators=(",", ":")).encode()
    assert len(raw) < MAX_BODY, "the body limit would answer first"
    return raw


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"n": 3}, "n"),
        ({"max_tokens": MAX_TOKENS + 1}, "max_tokens"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
    ],
    ids=["n", "max_tokens", "stop", "top_logprobs"],
)
def test_request_limits_are_400_with_param(limited_http: httpx.Client, fields: dict[str, Any], param: str) -> None:
    error = envelope(limited_http.post(CHAT, json=short_body(**fields)), 400)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param


def test_too_many_messages_is_400_with_param(limited_http: httpx.Client) -> None:
    response = limited_http.post(CHAT, content=many_messages(2049), headers={"Content-Type": "application/json"})
    assert envelope(response, 400)["param"] == "messages"


def test_limits_raise_bad_request_error_in_the_sdk(limited: Server) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        sdk(limited).chat.completions.create(**short_body(n=3))
    assert info.value.param == "n"


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


# --- fuzzing the OpenAPI schema ------------------------------------------------------------------------------

FUZZ_EXAMPLES = 400  # per operation and generation mode (GET /v1/models takes no input: one case)
SERVED_EXAMPLES = 300  # per generation endpoint, with the served model and a tiny completion


@dataclass
class FuzzTally:
    """What the fuzzer sent and got: counts by status, and every case that got a 5xx or a server-error frame."""

    served_model: bool
    statuses: collections.Counter[int] = field(default_factory=collections.Counter)
    failures: list[str] = field(default_factory=list)
    seconds: float = 0

    @property
    def cases(self) -> int:
        return sum(self.statuses.values())

    def record(self, label: str, body: Any, status: int, text: str) -> None:
        self.statuses[status] += 1
        if status >= 500 or '"server_error"' in text:
            self.failures.append(f"{label} -> {status} {text[:300]} for {json.dumps(body, default=str)[:500]}")


def fuzz_operation(operation: Any, mode: Any, examples: int, server: Server, session: Any, tally: FuzzTally) -> None:
    """``examples`` generated cases of one operation, sent one by one; with ``tally.served_model`` the cases
    name the real model and ask for at most 4 tokens, so that they reach the engine."""
    import requests
    from hypothesis import HealthCheck, Phase, given, settings

    headers = {"Authorization": f"Bearer {server.api_key}"}

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:
        if tally.served_model and isinstance(case.body, dict):
            case.body["model"] = CHAT_MODEL
            for name in ("max_tokens", "max_completion_tokens"):
                if isinstance(case.body.get(name), int):
                    case.body[name] = min(case.body[name], 4)
            case.body.setdefault("max_tokens", 4)
        try:
            response = case.call(base_url=f"{server.base_url}/v1", session=session, headers=headers, timeout=60)
        except requests.RequestException as exc:  # a hang or a dropped connection is a failure too
            tally.record(operation.label, case.body, 599, repr(exc))
            return
        tally.record(operation.label, case.body, response.status_code, response.text)

    run()


def fuzz(server: Server, tally: FuzzTally) -> None:
    """schemathesis' cases for every ``/v1`` operation of the served OpenAPI schema, positive and negative
    (operations without a body, GET, DELETE and cancel: positive only); for ``served_model``, positive
    generation cases only."""
    import requests
    import schemathesis
    from schemathesis import GenerationMode
    from schemathesis.core.result import Ok

    headers = {"Authorization": f"Bearer {server.api_key}"}
    schema = schemathesis.openapi.from_url(f"{server.base_url}/v1/openapi.json", headers=headers, timeout=60)
    started = time.monotonic()
    with requests.Session() as session:
        for result in schema.get_all_operations():
            assert isinstance(result, Ok), result.err()
            operation = result.ok()
            if tally.served_model:
                if operation.label in ("POST /chat/completions", "POST /completions"):
                    fuzz_operation(operation, GenerationMode.POSITIVE, SERVED_EXAMPLES, server, session, tally)
                continue
            # Negative cases need something to break: a body (a string path id has no invalid value to generate).
            modes = list(GenerationMode) if len(operation.body) else [GenerationMode.POSITIVE]
            for mode in modes:
                fuzz_operation(operation, mode, FUZZ_EXAMPLES, server, session, tally)
    tally.seconds = time.monotonic() - started


@pytest.mark.slow
def test_fuzzing_the_v1_schema_never_gets_a_5xx(limited: Server) -> None:
    schema_wide, served = FuzzTally(served_model=False), FuzzTally(served_model=True)
    fuzz(limited, schema_wide)
    fuzz(limited, served)
    print(
        f"\nfuzz: {schema_wide.cases} schema-wide cases {dict(schema_wide.statuses)} in {schema_wide.seconds:.0f} s; "
        f"{served.cases} served-model cases {dict(served.statuses)} in {served.seconds:.0f} s; "
        f"5xx/server errors: {len(schema_wide.failures) + len(served.failures)}"
    )
    assert schema_wide.cases + served.cases >= 2000
    assert served.statuses[200] > 0, "no fuzz case reached the engine"
    assert not schema_wide.failures + served.failures, "\n".join((schema_wide.failures + served.failures)[:20])
    assert httpx.get(f"{limited.base_url}/readyz", timeout=30).status_code == 200
    wait_engine_idle(limited, CHAT_MODEL, timeout=30)


# --- engine failure (last: it kills the engine) --------------------------------------------------------------


def engine_core(server: Server) -> psutil.Process:
    cores = [p for p in server.tree() if "EngineCore" in p.name() or "EngineCore" in " ".join(p.cmdline())]
    assert len(cores) == 1, f"EngineCore processes under the server: {cores}"
    return cores[0]


def status_of(url: str) -> int:
    try:
        return httpx.get(url, timeout=10).status_code
    except httpx.HTTPError:
        return 0


@pytest.mark.slow
def test_engine_death_ends_streams_and_turns_the_service_unavailable(
    limited: Server, limited_http: httpx.Client
) -> None:
    wait_engine_idle(limited, CHAT_MODEL, timeout=30)
    core = engine_core(limited)
    children = core.children(recursive=True)  # the engine's workers: orphaned when it dies
    stream = sdk(limited, timeout=60).chat.completions.create(**long_sdk_call(), stream=True)
    chunks = iter(stream)
    assert next(chunks).choices[0].delta.role == "assistant"
    killed = time.monotonic()
    core.send_signal(signal.SIGKILL)
    with pytest.raises(openai.APIError) as info:
        for _ in chunks:
            pass
    stream_ended = time.monotonic() - killed
    assert not isinstance(info.value, openai.APIConnectionError), "the stream broke instead of ending with an error"
    assert isinstance(info.value.body, dict) and info.value.body["type"] == "server_error", info.value.body
    for path in ("/readyz", "/livez"):
        url = f"{limited.base_url}{path}"
        wait_for(lambda url=url: status_of(url) == 503, 30, f"{path} answers 503")  # type: ignore[misc]
    started = time.monotonic()
    error = envelope(limited_http.post(CHAT, json=short_body()), 503)
    refused_in = time.monotonic() - started
    assert error["type"] == "server_error"
    assert int(limited_http.post(CHAT, json=short_body()).headers["retry-after"]) > 0
    with pytest.raises(openai.InternalServerError):
        sdk(limited, timeout=30).chat.completions.create(**short_body())
    _, orphans = psutil.wait_procs([core, *children], timeout=60)
    engine_gone = time.monotonic() - killed
    stopped_in = limited.stop()
    print(
        f"\nengine death: stream ended {stream_ended:.1f} s after the kill; a new request refused in "
        f"{refused_in:.2f} s; engine processes gone {engine_gone:.0f} s after the kill; server stopped in "
        f"{stopped_in:.0f} s"
    )
    assert stream_ended < 30
    assert refused_in < 5
    assert not still_alive(orphans), f"engine processes outlived their EngineCore: {orphans}"
    assert stopped_in < 60, "SIGTERM did not end a server whose engine had died"
