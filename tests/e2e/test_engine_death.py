"""Engine death through the real service: the limited server's EngineCore is SIGKILLed mid-stream. The stream
ends with an error (never a broken connection), health turns 503, new requests are refused at once, no engine
process outlives its EngineCore, and SIGTERM still ends the server.

It kills the engine of the server it shares with test_backpressure and test_hostile_input (``limited``), so it is
marked ``ends_server``: the e2e conftest runs it after every other test of that server.
"""

from __future__ import annotations

import contextlib
import signal
import time

import httpx
import openai
import psutil
import pytest

from tests.e2e.limited import CHAT, long_sdk_call, sdk, short_body
from tests.e2e.probes import envelope, wait_engine_idle, wait_for
from tests.e2e.server import Server, still_alive
from tests.e2e.servers import CHAT_MODEL


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
@pytest.mark.ends_server
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
    engine = [core, *children]  # gone or zombies (a zombie holds nothing; psutil would wait for its reaping)
    with contextlib.suppress(AssertionError):
        wait_for(lambda: not still_alive(engine), 60, "the engine's processes gone", 0.5)
    orphans = still_alive(engine)
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
