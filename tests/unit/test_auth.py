"""API keys: the key ring, bearer parsing, and the middleware in front of every route."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from starlette.types import Message, Receive, Scope, Send

from openai_routes.server.auth import APIKeyMiddleware, KeyRing, bearer_key, read_keys
from tests.unit.fakes import FakeEmbedEngine, FakeGenerateEngine, build_app, fake_registry

KEY = "sk-unit-auth"


# --- KeyRing --------------------------------------------------------------------------------------------------


def test_a_new_keyring_refuses_everything() -> None:
    keyring = KeyRing()
    assert not keyring.disabled
    assert not any(keyring.accepts(key) for key in ("", "sk-anything", KEY))


def test_set_keys_accepts_exactly_those_keys() -> None:
    keyring = KeyRing()
    keyring.set_keys(["a-key", "b-key"])
    assert keyring.accepts("a-key") and keyring.accepts("b-key")
    assert not any(keyring.accepts(key) for key in ("", "a-ke", "a-key ", "A-KEY", "c-key"))


def test_set_keys_replaces_the_previous_keys() -> None:
    keyring = KeyRing()
    keyring.set_keys(["old"])
    keyring.set_keys(["new"])
    assert keyring.accepts("new") and not keyring.accepts("old")


def test_disable_then_enable() -> None:
    keyring = KeyRing()
    keyring.set_keys(["k"])
    keyring.disable()
    assert keyring.disabled
    assert not keyring.accepts("k")  # disabled means the middleware skips the check, not "accept all"
    keyring.set_keys(["k"])
    assert not keyring.disabled and keyring.accepts("k")


def test_configure_with_env_keys() -> None:
    keyring = KeyRing()
    keyring.configure("keys", " k1, k2 ,,", None)
    assert keyring.accepts("k1") and keyring.accepts("k2")
    assert not keyring.accepts("") and not keyring.accepts(" k1")


def test_configure_with_a_keys_file_and_env(tmp_path: Path) -> None:
    keys_file = tmp_path / "keys.txt"
    keys_file.write_text("# team keys\nfile-key-1\n\n  file-key-2  \n")
    keyring = KeyRing()
    keyring.configure("keys", "env-key", str(keys_file))
    assert all(keyring.accepts(key) for key in ("env-key", "file-key-1", "file-key-2"))
    assert not keyring.accepts("# team keys")
    assert read_keys("env-key", str(keys_file)) == ["env-key", "file-key-1", "file-key-2"]


def test_configure_without_keys_generates_and_logs_one(caplog: pytest.LogCaptureFixture) -> None:
    keyring, other = KeyRing(), KeyRing()
    with caplog.at_level(logging.WARNING, logger="openai_routes.server.auth"):
        keyring.configure("keys", None, None)
        other.configure("keys", "", None)
    generated = re.findall(r"sk-bento-[\w-]+", caplog.text)
    assert len(generated) == 2 and generated[0] != generated[1]
    assert not keyring.disabled
    assert keyring.accepts(generated[0]) and not keyring.accepts(generated[1])
    assert not keyring.accepts("")


def test_configure_disabled(caplog: pytest.LogCaptureFixture) -> None:
    keyring = KeyRing()
    with caplog.at_level(logging.WARNING, logger="openai_routes.server.auth"):
        keyring.configure("disabled", "k1", None)
    assert keyring.disabled
    assert "disabled" in caplog.text


def test_keys_never_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="openai_routes.server.auth"):
        KeyRing().configure("keys", "sk-very-secret", None)
    assert "sk-very-secret" not in caplog.text


# --- bearer parsing -------------------------------------------------------------------------------------------


def scope_with(*headers: tuple[bytes, bytes]) -> Scope:
    return {"type": "http", "headers": list(headers)}


@pytest.mark.parametrize(
    ("value", "key"),
    [
        (b"Bearer abc", "abc"),
        (b"bearer abc", "abc"),
        (b"BEARER abc", "abc"),
        (b"Bearer   abc  ", "abc"),
        (b"Basic abc", None),
        (b"abc", None),
        (b"Token abc", None),
    ],
)
def test_bearer_key(value: bytes, key: str | None) -> None:
    assert bearer_key(scope_with((b"accept", b"*/*"), (b"authorization", value))) == key


def test_no_authorization_header() -> None:
    assert bearer_key(scope_with((b"accept", b"*/*"))) is None


# --- the middleware through the app ---------------------------------------------------------------------------


@pytest.fixture
def keyring() -> KeyRing:
    keyring = KeyRing()
    keyring.set_keys([KEY])
    return keyring


@pytest.fixture
async def client(keyring: KeyRing) -> AsyncIterator[httpx.AsyncClient]:
    app = build_app(fake_registry(FakeGenerateEngine(), FakeEmbedEngine()), keyring)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://test") as client:
        yield client


def assert_401(response: httpx.Response) -> None:
    assert response.status_code == 401
    assert response.json() == {
        "error": {
            "message": "Incorrect API key provided. Pass a valid key as 'Authorization: Bearer <key>'.",
            "type": "invalid_request_error",
            "param": None,
            "code": "invalid_api_key",
        }
    }


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {KEY}"}, {"Authorization": KEY}],
)
async def test_missing_or_wrong_key_is_401(client: httpx.AsyncClient, headers: dict[str, str]) -> None:
    assert_401(await client.get("/models", headers=headers))


async def test_the_key_is_checked_before_anything_else(client: httpx.AsyncClient) -> None:
    assert_401(await client.get("/no-such-route"))
    assert_401(await client.post("/chat/completions", content=b"not json"))


@pytest.mark.parametrize("scheme", ["Bearer", "bearer"])
async def test_correct_key_passes(client: httpx.AsyncClient, scheme: str) -> None:
    response = await client.get("/models", headers={"Authorization": f"{scheme} {KEY}"})
    assert response.status_code == 200
    assert response.json()["object"] == "list"


async def test_keys_set_after_the_app_was_built_apply(client: httpx.AsyncClient, keyring: KeyRing) -> None:
    """The service builds the app at import time and configures keys in its startup hook."""
    keyring.set_keys(["rotated"])
    assert_401(await client.get("/models", headers={"Authorization": f"Bearer {KEY}"}))
    assert (await client.get("/models", headers={"Authorization": "Bearer rotated"})).status_code == 200


async def test_unconfigured_keyring_refuses_every_key() -> None:
    app = build_app(fake_registry(FakeGenerateEngine(), FakeEmbedEngine()), KeyRing())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://test") as client:
        for headers in ({}, {"Authorization": "Bearer "}, {"Authorization": "Bearer x"}):
            assert_401(await client.get("/models", headers=headers))


async def test_disabled_keyring_lets_requests_through(client: httpx.AsyncClient, keyring: KeyRing) -> None:
    keyring.disable()
    assert (await client.get("/models")).status_code == 200


async def test_non_http_scopes_pass_through() -> None:
    seen: list[str] = []

    async def inner(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope["type"])

    async def receive() -> Message:
        return {"type": "lifespan.startup"}

    async def send(message: Message) -> None:
        raise AssertionError("nothing should be sent")

    await APIKeyMiddleware(inner, KeyRing())({"type": "lifespan"}, receive, send)
    assert seen == ["lifespan"]
