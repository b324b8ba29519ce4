"""Session fixtures: one real ``bentoml serve`` (real vLLM engine, default config) for the whole e2e suite,
driven by the official ``openai`` SDK with ``max_retries=0`` and by raw HTTP.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import openai
import pytest

from tests.e2e.server import Server, free_port

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


def announcer(config: pytest.Config) -> Callable[[str], None]:
    """Write progress to the terminal even while pytest captures output."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None:
        return print

    def announce(line: str) -> None:
        with capture.global_and_fixture_disabled():
            reporter.write_line(f"[e2e] {line}")

    return announce


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config) -> Iterator[Server]:
    """The real service; ``BENTO_OAI_E2E_PORT`` + ``BENTO_OAI_E2E_KEY`` reuse one already running (dev loop)."""
    log_path = Path(tmp_path_factory.mktemp("server")) / "serve.log"
    if os.environ.get("BENTO_OAI_E2E_PORT"):
        yield Server(
            port=int(os.environ["BENTO_OAI_E2E_PORT"]), api_key=os.environ["BENTO_OAI_E2E_KEY"], log_path=log_path
        )
        return
    srv = Server(
        port=free_port(),
        api_key=f"sk-test-{secrets.token_hex(16)}",
        log_path=log_path,
        announce=announcer(pytestconfig),
    )
    srv.start()
    try:
        yield srv
    finally:
        seconds = srv.stop()
        assert not srv.killed, f"processes left running after SIGTERM: {srv.killed}"
        assert seconds < 60, f"the server took {seconds:.0f} s to stop"


@pytest.fixture(scope="session")
def client(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=server.api_key, max_retries=0, timeout=120)


@pytest.fixture(scope="session")
def aclient(server: Server) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{server.base_url}/v1", api_key=server.api_key, max_retries=0, timeout=120)


@pytest.fixture(scope="session")
def http(server: Server) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {server.api_key}"}
    with httpx.Client(base_url=server.base_url, headers=headers, timeout=120) as session:
        yield session


CHAT_MODEL = "smollm2-135m-instruct"


@pytest.fixture(scope="session")
def tokenizer() -> PreTrainedTokenizerBase:
    """The chat model's own tokenizer, read from the BentoML store: counts tokens independently of the server."""
    import bentoml
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(bentoml.models.get(CHAT_MODEL).path)
