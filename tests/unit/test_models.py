"""``/v1/models`` carries each model's context length (``max_model_len``), read from its engine."""

from __future__ import annotations

import httpx

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
