"""The playground's routes through ``create_root_app`` (no server, no browser): the page and its files load
without a key while everything else keeps asking for one, ``/playground/config`` tells the key mode as the key
ring has it now, the files reference only each other, and ``playground_page=False`` routes none of it.

The page itself is driven in a real browser by tests/e2e/test_playground.py.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from openai_routes.app import create_root_app
from openai_routes.core.limits import Limits
from openai_routes.playground import router as playground
from openai_routes.server.auth import KeyRing
from openai_routes.server.guard import Drain
from settings import ServiceConfig, load_config
from tests.unit.fakes import FakeEmbedEngine, FakeGenerateEngine, fake_registry

KEY = "sk-unit-playground"
ASSET_PATHS = [playground.ASSET_PREFIX + name for name in playground.ASSETS]


def root_app(keyring: KeyRing, *, playground_page: bool = True) -> FastAPI:
    registry = fake_registry(FakeGenerateEngine(), FakeEmbedEngine())
    return create_root_app(registry, keyring, Limits(), Drain(), playground_page=playground_page)


def keyed() -> KeyRing:
    keyring = KeyRing()
    keyring.set_keys([KEY])
    return keyring


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(root_app(keyed())), base_url="http://test") as client:
        yield client


async def test_the_page_is_served_at_the_root_and_at_playground_without_a_key(client: httpx.AsyncClient) -> None:
    pages = [await client.get(path) for path in playground.PAGE_PATHS]
    for page in pages:
        assert page.status_code == 200
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        assert "set-cookie" not in page.headers
        assert "<title>bento-oai playground</title>" in page.text
    assert pages[0].content == pages[1].content == (playground.STATIC / "index.html").read_bytes()


@pytest.mark.parametrize("path", ASSET_PATHS)
async def test_each_file_is_served_without_a_key_with_its_type(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path)
    assert response.status_code == 200
    name = path.removeprefix(playground.ASSET_PREFIX)
    assert response.headers["content-type"].startswith(playground.ASSETS[name])
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.content == (playground.STATIC / name).read_bytes()


async def test_the_policy_allows_this_origin_only(client: httpx.AsyncClient) -> None:
    policy = (await client.get("/")).headers["content-security-policy"]
    directives = dict(part.strip().split(" ", 1) for part in policy.split(";"))
    assert directives["default-src"] == "'none'"
    assert directives["frame-ancestors"] == "'none'"
    for name in ("script-src", "style-src", "connect-src"):
        assert directives[name] == "'self'", name
    assert directives["img-src"] == "'self' blob:"  # the thumbnails of attached images: URLs the page makes
    assert "http" not in policy and "*" not in policy


async def test_everything_else_still_needs_the_key(client: httpx.AsyncClient) -> None:
    refused = [
        await client.post("/", json={}),  # only GET is public
        await client.post("/playground", json={}),
        await client.get("/playground/static/secret.txt"),  # not one of the files: not public
        await client.get("/playground/static/../../settings.py"),
        await client.post("/tokenize", json={"prompt": "hi"}),
    ]
    for response in refused:
        assert response.status_code == 401, response.request.url
        assert response.json()["error"]["code"] == "invalid_api_key"
    authorized = await client.post("/tokenize", json={"prompt": "hi"}, headers={"Authorization": f"Bearer {KEY}"})
    assert authorized.status_code == 200


async def test_an_unknown_file_is_a_404_with_the_key(client: httpx.AsyncClient) -> None:
    response = await client.get("/playground/static/nope.js", headers={"Authorization": f"Bearer {KEY}"})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


async def test_config_tells_the_key_mode_the_keyring_has_now() -> None:
    keyring = KeyRing()  # the service configures it in its startup hook, after building the app
    async with httpx.AsyncClient(transport=httpx.ASGITransport(root_app(keyring)), base_url="http://test") as client:
        assert (await client.get(playground.CONFIG_PATH)).json() == {"api_key_required": True}
        keyring.disable()
        response = await client.get(playground.CONFIG_PATH)
        assert response.json() == {"api_key_required": False}
        assert (await client.post("/tokenize", json={"prompt": "hi"})).status_code == 200  # no key at all now
        keyring.set_keys([KEY])
        assert (await client.get(playground.CONFIG_PATH)).json() == {"api_key_required": True}


def referenced_paths(text: str) -> set[str]:
    """The same-origin paths a page or module loads: ``src``/``href`` attributes and relative imports."""
    attributes = set(re.findall(r'(?:src|href)="([^"]+)"', text))
    imports = {playground.ASSET_PREFIX + name for name in re.findall(r'from "\./([\w.-]+)"', text)}
    return attributes | imports


def test_the_files_reference_only_each_other_and_nothing_outside() -> None:
    sources = {name: (playground.STATIC / name).read_text() for name in ["index.html", *playground.ASSETS]}
    referenced = set().union(*(referenced_paths(text) for text in sources.values()))
    assert referenced, "the page loads its script and style"
    assert referenced <= playground.PUBLIC_PATHS, referenced - playground.PUBLIC_PATHS
    for name, text in sources.items():
        text = re.sub(r'xmlns="[^"]*"', "", text)  # an XML namespace is a name, not something loaded
        assert not re.search(r"https?://|//fonts\.|@import|url\(", text), f"{name} names an outside resource"
    shipped = {path.name for path in playground.STATIC.iterdir()}
    assert shipped == {"index.html", *playground.ASSETS}, "every file in the folder is served, and only those"


async def test_turned_off_it_routes_nothing_and_bentoml_keeps_its_page() -> None:
    app = root_app(keyed(), playground_page=False)
    paths = {getattr(route, "path", "") for route in app.routes}
    assert not paths & playground.PUBLIC_PATHS
    assert not any(path.startswith("/playground") for path in paths)
    assert "/" not in paths  # so BentoML's mount does not claim "/" and its own index answers it
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://test") as client:
        assert (await client.get("/")).status_code == 401  # no public path left


def test_the_config_key_defaults_to_on_and_turns_off() -> None:
    default = load_config()
    assert default.playground is True
    off = ServiceConfig.model_validate({**default.model_dump(), "playground": False})
    assert off.playground is False
    with pytest.raises(ValueError):
        ServiceConfig.model_validate({**default.model_dump(), "playground": "sometimes"})


def test_the_service_builds_its_root_app_with_the_page() -> None:
    import service

    paths = {getattr(route, "path", "") for route in service.root_app.routes}
    assert service.CONFIG.playground and set(playground.PAGE_PATHS) <= paths
