"""LoRA adapters as models without an engine: the admin routes' key check, an adapter in the registry (listed with
its parent, admitted against its base), the adapters the config names, and the run-time list kept across restarts
(``engines.lora_adapters`` with a fake base engine)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from engines.lora_adapters import LoRAAdapters, LoRABase
from openai_routes.core.adapters import AdapterLoader
from openai_routes.core.engine import EngineInputError
from openai_routes.core.errors import APIError, as_api_error
from openai_routes.core.limits import Limits
from openai_routes.core.registry import ModelRegistry, ServedModel
from openai_routes.server.auth import KeyRing
from settings import ServiceConfig
from tests.unit.fakes import CHAT_MODEL, FakeEmbedEngine, FakeGenerateEngine, build_app, fake_registry

CLIENT_KEY, ADMIN_KEY = "sk-client", "sk-admin"


class RecordingLoader:
    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []

    async def load(self, name: str, path: str, base: str | None) -> None:
        self.calls.append(("load", name, path, str(base)))

    async def unload(self, name: str) -> None:
        self.calls.append(("unload", name))


def keys(*accepted: str) -> KeyRing:
    ring = KeyRing()
    ring.set_keys(accepted)
    return ring


@pytest.fixture
def loader() -> RecordingLoader:
    return RecordingLoader()


async def post(
    admin_keys: KeyRing, loader: AdapterLoader, key: str, route: str, body: dict[str, Any]
) -> httpx.Response:
    registry = fake_registry(FakeGenerateEngine(), FakeEmbedEngine())
    app = build_app(registry, keys(CLIENT_KEY), admin=(admin_keys, loader))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://test") as client:
        return await client.post(route, json=body, headers={"Authorization": f"Bearer {key}"})


LOAD = {"lora_name": "tuned", "lora_path": "tuned-dir"}


async def test_an_admin_key_loads_and_unloads(loader: RecordingLoader) -> None:
    loaded = await post(keys(ADMIN_KEY), loader, ADMIN_KEY, "/load_lora_adapter", LOAD)
    assert (loaded.status_code, loaded.text) == (200, "Success: LoRA adapter 'tuned' added successfully.")
    unloaded = await post(keys(ADMIN_KEY), loader, ADMIN_KEY, "/unload_lora_adapter", {"lora_name": "tuned"})
    assert unloaded.status_code == 200
    assert loader.calls == [("load", "tuned", "tuned-dir", "None"), ("unload", "tuned")]


@pytest.mark.parametrize(
    ("admin_keys", "key", "status", "code"),
    [
        (keys(ADMIN_KEY), CLIENT_KEY, 403, "permission_denied"),
        (keys(ADMIN_KEY), "sk-wrong", 401, "invalid_api_key"),
        (keys(), ADMIN_KEY, 404, "not_found"),  # no admin key configured: the routes are off
        (keys(), CLIENT_KEY, 404, "not_found"),
    ],
)
async def test_only_admin_keys_reach_the_admin_routes(
    loader: RecordingLoader, admin_keys: KeyRing, key: str, status: int, code: str
) -> None:
    for route in ("/load_lora_adapter", "/unload_lora_adapter"):
        answer = await post(admin_keys, loader, key, route, LOAD)
        assert (answer.status_code, answer.json()["error"]["code"]) == (status, code)
    assert loader.calls == []


async def test_an_admin_key_is_no_client_key(loader: RecordingLoader) -> None:
    registry = fake_registry(FakeGenerateEngine(), FakeEmbedEngine())
    app = build_app(registry, keys(CLIENT_KEY), admin=(keys(ADMIN_KEY), loader))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://test") as client:
        answer = await client.get("/models", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert answer.status_code == 401


async def test_a_bad_body_is_a_400(loader: RecordingLoader) -> None:
    answer = await post(keys(ADMIN_KEY), loader, ADMIN_KEY, "/load_lora_adapter", {"lora_name": "x"})
    assert (answer.status_code, answer.json()["error"]["param"]) == (400, "lora_path")


async def test_an_adapter_is_listed_with_its_parent_and_removed_alone() -> None:
    registry = fake_registry(FakeGenerateEngine(), FakeEmbedEngine())
    base = registry.get(CHAT_MODEL)
    registry.add(ServedModel("tuned", "chat", base.engine, parent=CHAT_MODEL))
    app = build_app(registry, keys(CLIENT_KEY))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://test") as client:
        listed = (await client.get("/models", headers={"Authorization": f"Bearer {CLIENT_KEY}"})).json()["data"]
    by_id = {model["id"]: model for model in listed}
    assert (by_id["tuned"]["parent"], by_id["tuned"]["root"]) == (CHAT_MODEL, CHAT_MODEL)
    assert (by_id[CHAT_MODEL]["parent"], by_id[CHAT_MODEL]["root"]) == (None, CHAT_MODEL)
    assert [model.id for model in registry.bases()] == [CHAT_MODEL, "org/fake-embed"]
    registry.remove("tuned")
    assert registry.find("tuned") is None and registry.find(CHAT_MODEL) is base


class FakeLoRAEngine(FakeGenerateEngine):
    """A base engine that takes adapters: records them, refuses the ones named ``broken``."""

    def __init__(self) -> None:
        super().__init__()
        self.adapters: list[Any] = []

    async def add_adapter(self, adapter: Any) -> None:
        if adapter.lora_name == "broken":
            raise RuntimeError("/secret/path failed")
        self.adapters.append(adapter)

    def with_adapter(self, adapter: Any) -> FakeGenerateEngine:
        return self


@pytest.fixture
def adapter_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "adapters"
    for name in ("one", "two"):
        (directory / name).mkdir(parents=True)
    monkeypatch.setattr("engines.lora_adapters.check_adapter", lambda *_args: None)
    return directory


def adapters_on(registry: ModelRegistry, directory: Path) -> LoRAAdapters:
    adapters = LoRAAdapters(registry, directory, directory.parent / "state.json", find_tag=lambda _tag: None)
    adapters.bases[CHAT_MODEL] = LoRABase(CHAT_MODEL, directory, max_rank=8)
    return adapters


async def test_run_time_adapters_are_loaded_again_after_a_restart(adapter_dirs: Path) -> None:
    engine = FakeLoRAEngine()
    registry = ModelRegistry()
    registry.add(ServedModel(CHAT_MODEL, "chat", engine))
    adapters = adapters_on(registry, adapter_dirs)
    await adapters.load("tuned-one", "one", None)
    await adapters.load("tuned-two", "two", CHAT_MODEL)
    await adapters.unload("tuned-two")
    assert [entry["lora_name"] for entry in json.loads((adapter_dirs.parent / "state.json").read_text())] == [
        "tuned-one"
    ]
    restarted = ModelRegistry()  # a new server: a new engine, and the list read back
    restarted.add(ServedModel(CHAT_MODEL, "chat", FakeLoRAEngine()))
    await adapters_on(restarted, adapter_dirs).restore()
    assert [(model.id, model.parent) for model in restarted.models()] == [(CHAT_MODEL, None), ("tuned-one", CHAT_MODEL)]


async def test_what_the_engine_refuses_is_a_clean_400_and_nothing_is_served(adapter_dirs: Path) -> None:
    registry = ModelRegistry()
    registry.add(ServedModel(CHAT_MODEL, "chat", FakeLoRAEngine()))
    adapters = adapters_on(registry, adapter_dirs)
    with pytest.raises(EngineInputError) as refused:
        await adapters.load("broken", "one", None)
    error = as_api_error(refused.value)
    assert (error.status, error.param) == (400, "lora_path")
    assert "/secret" not in error.message and registry.find("broken") is None
    with pytest.raises(APIError) as unknown_base:
        await adapters.load("x", "one", "not-a-base")
    assert unknown_base.value.param == "base_model"
    with pytest.raises(APIError) as not_an_adapter:
        await adapters.unload(CHAT_MODEL)
    assert not_an_adapter.value.status == 404


def config(**model: Any) -> dict[str, Any]:
    entry = {"id": "base", "source": {"bentoml": "base"}, **model}
    return {"models": [entry]}


def test_config_adapters_need_lora_and_unique_names() -> None:
    adapter = {"id": "tuned", "source": {"path": "adapters/tuned"}}
    parsed = ServiceConfig.model_validate(config(engine={"enable_lora": True, "max_lora_rank": 32}, adapters=[adapter]))
    assert (parsed.models[0].adapter_ids, parsed.models[0].max_lora_rank, parsed.adapters_dir) == (
        ["tuned"],
        32,
        ".data/adapters",
    )
    with pytest.raises(ValidationError, match="enable_lora"):
        ServiceConfig.model_validate(config(adapters=[adapter]))
    with pytest.raises(ValidationError, match="used twice: base"):
        ServiceConfig.model_validate(config(engine={"enable_lora": True}, adapters=[{**adapter, "id": "base"}]))


async def test_an_adapter_is_admitted_against_its_base() -> None:
    """Room for one sequence and no queue: while the adapter's request runs, the base's gets 429 (they share one
    engine), and the adapter's request is counted under its own id."""
    hold = asyncio.Event()
    generator = FakeGenerateEngine(hold=hold)
    registry = fake_registry(generator, FakeEmbedEngine())
    registry.add(ServedModel("tuned", "chat", generator, parent=CHAT_MODEL))
    app = build_app(registry, keys(CLIENT_KEY), Limits(max_in_flight=1, max_queued=0))
    headers = {"Authorization": f"Bearer {CLIENT_KEY}"}
    user = [{"role": "user", "content": "hi"}]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://test", headers=headers) as client:
        adapter = asyncio.create_task(client.post("/chat/completions", json={"model": "tuned", "messages": user}))
        while not generator.calls:
            await asyncio.sleep(0.01)
        # Admitted by mistake, it would wait for the held engine: the timeout only bounds that failure.
        base = await asyncio.wait_for(
            client.post("/chat/completions", json={"model": CHAT_MODEL, "messages": user}), 30
        )
        assert (base.status_code, base.json()["error"]["code"]) == (429, "rate_limit_exceeded")
        hold.set()
        answer = await adapter
    assert (answer.status_code, answer.json()["model"]) == (200, "tuned")
