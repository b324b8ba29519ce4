"""``/v1/models`` carries each model's context length (``max_model_len``) and what it reads (``input_modalities``),
read from its engine."""

from __future__ import annotations

from typing import Any

import httpx

from openai_routes.core.engine import ModelCapabilities
from openai_routes.core.registry import ModelRegistry
from openai_routes.server.auth import KeyRing
from tests.unit.fakes import (
    CHAT_ALIAS,
    CHAT_MODEL,
    EMBED_MODEL,
    FakeEmbedEngine,
    FakeGenerateEngine,
    build_app,
    fake_registry,
)

KEY = "sk-unit-test-key"


async def test_list_and_retrieve_carry_max_model_len() -> None:
    keyring = KeyRing()
    keyring.set_keys([KEY])
    app = build_app(fake_registry(FakeGenerateEngine(context=100), FakeEmbedEngine(context=7)), keyring)
    transport = httpx.ASGITransport(app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://t", headers={"Authorization": f"Bearer {KEY}"}
    ) as client:
        listed = {model["id"]: model["max_model_len"] for model in (await client.get("/models")).json()["data"]}
        assert listed == {CHAT_MODEL: 100, CHAT_ALIAS: 100, EMBED_MODEL: 7}
        for name, length in listed.items():
            assert (await client.get(f"/models/{name}")).json()["max_model_len"] == length


async def get(registry: ModelRegistry, path: str) -> Any:
    keyring = KeyRing()
    keyring.set_keys([KEY])
    transport = httpx.ASGITransport(build_app(registry, keyring))
    async with httpx.AsyncClient(
        transport=transport, base_url="http://t", headers={"Authorization": f"Bearer {KEY}"}
    ) as client:
        return (await client.get(path)).json()


async def test_input_modalities_say_which_models_take_images() -> None:
    vision = fake_registry(FakeGenerateEngine(capabilities=ModelCapabilities(max_images=2)), FakeEmbedEngine())
    listed = {model["id"]: model["input_modalities"] for model in (await get(vision, "/models"))["data"]}
    assert listed == {CHAT_MODEL: ["text", "image"], CHAT_ALIAS: ["text", "image"], EMBED_MODEL: ["text"]}
    text_only = fake_registry(FakeGenerateEngine(), FakeEmbedEngine())
    assert (await get(text_only, f"/models/{CHAT_MODEL}"))["input_modalities"] == ["text"]
