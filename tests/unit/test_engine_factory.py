"""``engines.factory.start_models`` (no engine: ``start_model`` is replaced): engines start at once or one after
another, land in the registry in configuration order, and a failed start leaves the others registered."""

from __future__ import annotations

import threading
import time

import pytest

from engines import factory
from openai_routes.core.registry import ModelRegistry, ServedModel
from settings import ModelConfig
from tests.unit.fakes import FakeEmbedEngine, FakeGenerateEngine

MODELS = [
    ModelConfig.model_validate({"id": "slow-chat", "source": {"path": "/models/chat"}}),
    ModelConfig.model_validate({"id": "embed", "task": "embed", "source": {"path": "/models/embed"}}),
]
DELAYS = {"slow-chat": 0.3, "embed": 0.1}


class Starts:
    """Stands in for ``start_model``: sleeps as a start would block, records how many ran at once."""

    def __init__(self, failing: str | None = None) -> None:
        self.failing = failing
        self.running = 0
        self.most_at_once = 0
        self.lock = threading.Lock()

    def __call__(self, model: ModelConfig, model_path: str, shutdown_grace: float, on_cpu: bool) -> ServedModel:
        with self.lock:
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        time.sleep(DELAYS[model.id])
        with self.lock:
            self.running -= 1
        if model.id == self.failing:
            raise RuntimeError(f"{model.id} did not start")
        engine = FakeEmbedEngine() if model.task == "embed" else FakeGenerateEngine()
        return ServedModel(model.id, model.task, engine)


@pytest.mark.parametrize("on_cpu", [True, False])
async def test_engines_are_registered_in_configuration_order(monkeypatch: pytest.MonkeyPatch, on_cpu: bool) -> None:
    starts = Starts()
    monkeypatch.setattr(factory, "start_model", starts)
    registry = ModelRegistry()
    await factory.start_models(registry, [(m, "") for m in MODELS], 30, on_cpu=on_cpu)
    assert [model.id for model in registry.models()] == ["slow-chat", "embed"]
    assert starts.most_at_once == (2 if on_cpu else 1)


async def test_a_failed_start_is_raised_after_the_others_are_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(factory, "start_model", Starts(failing="slow-chat"))
    registry = ModelRegistry()
    with pytest.raises(RuntimeError, match="slow-chat did not start"):
        await factory.start_models(registry, [(m, "") for m in MODELS], 30, on_cpu=True)
    assert [model.id for model in registry.models()] == ["embed"]  # so the shutdown hook stops it
