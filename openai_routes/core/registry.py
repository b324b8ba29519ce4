"""The models this server answers for: ids, aliases, and the engine behind each.

The service fills the registry when its engines are up; routers resolve a request's ``model`` here, so an
alias reaches the same engine as its id and an unknown name is a 404 ``model_not_found``. A LoRA adapter is a model
of its own whose ``parent`` is its base: its engine is the base's, bound to the adapter.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import cast

from openai_routes.core.engine import EmbedEngine, Engine, GenerateEngine, Task
from openai_routes.core.errors import bad_request, model_not_found, service_unavailable


@dataclass
class ServedModel:
    id: str
    task: Task
    engine: Engine
    owned_by: str = "bento-oai"
    created: int = 0
    aliases: tuple[str, ...] = field(default_factory=tuple)
    parent: str | None = None  # a LoRA adapter's base model: it runs on (and is admitted against) that engine

    @property
    def root(self) -> str:
        """The model whose engine serves this one (vLLM's ``root``)."""
        return self.parent or self.id

    @property
    def reads_images(self) -> bool:
        """Whether its prompts may hold images: a chat model whose engine takes some (``ModelCapabilities``)."""
        return self.task == "chat" and cast(GenerateEngine, self.engine).capabilities.max_images > 0


class ModelRegistry:
    def __init__(self) -> None:
        self._by_name: dict[str, ServedModel] = {}
        self._models: list[ServedModel] = []

    def add(self, model: ServedModel) -> None:
        names = (model.id, *model.aliases)
        taken = [name for name in names if name in self._by_name]
        if taken:
            raise ValueError(f"model name(s) already registered: {', '.join(taken)}")
        self._models.append(model)
        self._by_name.update(dict.fromkeys(names, model))

    def remove(self, name: str) -> ServedModel:
        """Take the model ``name`` (its id) and its aliases out (a 404 for an unknown one)."""
        model = self.get(name)
        self._models.remove(model)
        for alias in (model.id, *model.aliases):
            del self._by_name[alias]
        return model

    def bases(self) -> list[ServedModel]:
        """The models with an engine of their own (not adapters), each once."""
        return [model for model in self._models if model.parent is None]

    def clear(self) -> None:
        self._by_name.clear()
        self._models.clear()

    def names(self) -> list[tuple[str, ServedModel]]:
        """Every id and alias with the model it names, in configuration order."""
        return [(name, model) for model in self._models for name in (model.id, *model.aliases)]

    def find(self, name: str) -> ServedModel | None:
        return self._by_name.get(name)

    def get(self, name: str) -> ServedModel:
        model = self._by_name.get(name)
        if model is None:
            raise model_not_found(name)
        return model

    def models(self) -> list[ServedModel]:
        return list(self._models)

    def ready(self) -> bool:
        return bool(self._models) and all(model.engine.is_healthy() for model in self.bases())

    def _usable(self, name: str, task: Task) -> ServedModel:
        model = self.get(name)
        if model.task != task:
            endpoint = "/v1/embeddings" if model.task == "embed" else "/v1/chat/completions or /v1/completions"
            raise bad_request(
                f"The model `{name}` is a{'n embedding' if model.task == 'embed' else ' chat'} model; "
                f"use it with {endpoint}.",
                param="model",
                code="model_not_supported",
            )
        if not model.engine.is_healthy():
            raise service_unavailable()
        return model

    def generator(self, name: str) -> tuple[ServedModel, GenerateEngine]:
        model = self._usable(name, "chat")
        return model, cast(GenerateEngine, model.engine)

    def embedder(self, name: str) -> tuple[ServedModel, EmbedEngine]:
        model = self._usable(name, "embed")
        return model, cast(EmbedEngine, model.engine)
