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

from openai_routes.server.lifecycle import WATCHDOG_EXIT
from tests.e2e.server import Server, free_port, store_url

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
def api_keys() -> tuple[str, str | None]:
    """The suite's key and a second one (the privacy tests' other caller). A reused server
    (``BENTO_OAI_E2E_PORT``) gives its second key in ``BENTO_OAI_E2E_OTHER_KEY``; without one it is None."""
    if os.environ.get("BENTO_OAI_E2E_PORT"):
        return os.environ["BENTO_OAI_E2E_KEY"], os.environ.get("BENTO_OAI_E2E_OTHER_KEY") or None
    return f"sk-test-{secrets.token_hex(16)}", f"sk-test-other-{secrets.token_hex(16)}"


@pytest.fixture(scope="session")
def server(
    tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config, api_keys: tuple[str, str | None]
) -> Iterator[Server]:
    """The real service; ``BENTO_OAI_E2E_PORT`` + ``BENTO_OAI_E2E_KEY`` reuse one already running (dev loop)."""
    log_dir = Path(tmp_path_factory.mktemp("server"))
    key, other = api_keys
    if os.environ.get("BENTO_OAI_E2E_PORT"):
        yield Server(port=int(os.environ["BENTO_OAI_E2E_PORT"]), api_key=key, log_path=log_dir / "serve.log")
        return
    srv = Server(
        port=free_port(),
        api_key=key,
        log_path=log_dir / "serve.log",
        announce=announcer(pytestconfig),
        extra_env={"BENTO_OAI_API_KEYS": f"{key},{other}", "BENTO_OAI_STORE_URL": store_url(log_dir)},
    )
    srv.start()
    try:
        yield srv
    finally:
        seconds = srv.stop()
        assert not srv.killed, f"processes left running after SIGTERM: {srv.killed}"
        assert seconds < 60, f"the server took {seconds:.0f} s to stop"
        # The disconnect tests ran here: a request its client left unanswered must not hold the shutdown until
        # the watchdog ends it (lifecycle.start_watchdog logs this line, then exits).
        assert WATCHDOG_EXIT not in srv.log_path.read_text(errors="replace"), srv.log_tail()


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


@pytest.fixture(scope="session")
def other_key(api_keys: tuple[str, str | None]) -> str:
    """A second key the server accepts: another caller, who must not see the first one's stored responses."""
    if api_keys[1] is None:
        pytest.skip("a reused server (BENTO_OAI_E2E_PORT) without BENTO_OAI_E2E_OTHER_KEY: no second key")
    return api_keys[1]


@pytest.fixture(scope="session")
def other_client(server: Server, other_key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=other_key, max_retries=0, timeout=120)


CHAT_MODEL = "smollm2-135m-instruct"


@pytest.fixture(scope="session")
def tokenizer() -> PreTrainedTokenizerBase:
    """The chat model's own tokenizer, read from the BentoML store: counts tokens independently of the server."""
    import bentoml
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(bentoml.models.get(CHAT_MODEL).path)
