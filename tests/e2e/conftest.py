"""Session fixtures: real ``bentoml serve`` servers (real vLLM engines) from ``tests.e2e.pool``, driven by the
official ``openai`` SDK with ``max_retries=0`` and by raw HTTP.

The unit tests run first (``pytest_collection_modifyitems``) and the pool is planned once collection is done
(``pytest_collection_finish``), so the default server boots while the unit tests run; after each test the servers no
later test needs are stopped and checked (a failed check is that test's teardown error). Tests marked
``ends_server`` run after every other test of the servers they use.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import openai
import pytest

from tests.e2e.pool import ServerPool, specs_of
from tests.e2e.server import Server
from tests.e2e.servers import SPECS

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


POOL = pytest.StashKey[ServerPool]()


def reused() -> bool:
    return bool(os.environ.get("BENTO_OAI_E2E_PORT"))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests outside ``tests/e2e`` (the unit tests) run first, while the first servers boot; then the tests of
    each server run together, those of a second life (a spec's ``after``) last, so that it boots while other tests
    run; a test marked ``ends_server`` moves after the last other test that uses one of its servers."""
    here = Path(__file__).parent
    items.sort(key=lambda item: here in item.path.parents)  # stable: each half keeps its order
    group_by_server(items)
    second_lives = {spec.name for spec in SPECS if spec.after}
    items.sort(key=lambda item: bool(specs_of(item, SPECS) & second_lives))  # stable
    for ender in [item for item in items if item.get_closest_marker("ends_server")]:
        ends = specs_of(ender, SPECS)
        items.remove(ender)
        users = [position for position, item in enumerate(items) if specs_of(item, SPECS) & ends]
        items.insert(max(users, default=len(items) - 1) + 1, ender)


def group_by_server(items: list[pytest.Item]) -> None:
    """The tests of a server other than the default one move up to its first test (modules stay in order inside):
    the server then stops early, and at most the default server, the current one and the next are up."""
    first: dict[str, int] = {}
    keys = []
    for position, item in enumerate(items):
        own = specs_of(item, SPECS) - {"default"}
        for name in own:
            first.setdefault(name, position)
        keys.append((min((first[name] for name in own), default=position), position))
    order = sorted(range(len(items)), key=keys.__getitem__)
    items[:] = [items[position] for position in order]


def pytest_collection_finish(session: pytest.Session) -> None:
    if session.config.option.collectonly:
        return
    specs = [spec for spec in SPECS if not (spec.name == "default" and reused())]
    pool = ServerPool(specs, announcer(session.config))
    session.config.stash[POOL] = pool
    pool.plan(session.items)
    pool.schedule()


@pytest.hookimpl(wrapper=True, trylast=True)
def pytest_runtest_teardown(item: pytest.Item) -> Generator[None, None, None]:
    """After the test's own fixtures are gone: stop the servers no later test needs, boot the next ones."""
    yield
    pool = item.config.stash.get(POOL, None)
    if pool is not None:
        pool.release(item.nodeid)


def pytest_sessionfinish(session: pytest.Session) -> None:
    pool = session.config.stash.get(POOL, None)
    if pool is not None:
        pool.close()


@pytest.fixture(scope="session")
def pool(pytestconfig: pytest.Config) -> ServerPool:
    return pytestconfig.stash[POOL]


@pytest.fixture(scope="session")
def api_keys(pool: ServerPool) -> tuple[str, str | None]:
    """The suite's key and a second one (the privacy tests' other caller). A reused server
    (``BENTO_OAI_E2E_PORT``) gives its second key in ``BENTO_OAI_E2E_OTHER_KEY``; without one it is None."""
    if reused():
        return os.environ["BENTO_OAI_E2E_KEY"], os.environ.get("BENTO_OAI_E2E_OTHER_KEY") or None
    return pool.key("default")


@pytest.fixture(scope="session")
def server(pool: ServerPool, api_keys: tuple[str, str | None], tmp_path_factory: pytest.TempPathFactory) -> Server:
    """The real service (default config); ``BENTO_OAI_E2E_PORT`` + ``BENTO_OAI_E2E_KEY`` reuse one already running
    (dev loop). The pool stops it after its last test and checks that stop (see ``tests.e2e.pool``)."""
    if reused():
        log_path = tmp_path_factory.mktemp("server") / "serve.log"
        return Server(port=int(os.environ["BENTO_OAI_E2E_PORT"]), api_key=api_keys[0], log_path=log_path)
    return pool.get("default")


@pytest.fixture(scope="session")
def limited(pool: ServerPool) -> Server:
    """The server with small limits (``tests/configs/limited.yaml``, ``tests.e2e.limited``)."""
    return pool.get("limited")


@pytest.fixture(scope="session")
def lora_server(pool: ServerPool) -> Server:
    """The server with LoRA adapters (``tests/configs/lora.yaml``, ``tests.e2e.servers.lora_config``)."""
    return pool.get("lora")


@pytest.fixture(scope="module")
def limited_http(limited: Server) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {limited.api_key}"}
    with httpx.Client(base_url=limited.base_url, headers=headers, timeout=120) as session:
        yield session


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
