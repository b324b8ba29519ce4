"""LoRA adapters served as models (``AdapterLoader``): the config's, and those loaded at run time.

An adapter is added to its base's engine (``VLLMGenerator.add_adapter``) and then to the registry as a model of its
own, whose engine is the base's view through the adapter and whose ``parent`` is the base: every endpoint serves it
with no change, admission counts it against its base, and metrics carry its id. Adapters loaded at run time are
kept in a JSON file (``state_file``) and loaded again when the server starts.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from engines.lora_files import check_adapter, find_adapter, refused
from engines.vllm_generator import VLLMGenerator
from openai_routes.core.errors import bad_request, model_not_found
from openai_routes.core.registry import ModelRegistry, ServedModel

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoRABase:
    """A base model that takes adapters: its id, its weights directory, its engine's ``max_lora_rank``."""

    id: str
    weights: Path
    max_rank: int


class LoRAAdapters:
    def __init__(
        self,
        registry: ModelRegistry,
        adapters_dir: Path,
        state_file: Path,
        find_tag: Callable[[str], Path | None],
    ) -> None:
        self.registry = registry
        self.adapters_dir = adapters_dir
        self.state_file = state_file
        self.find_tag = find_tag
        self.bases: dict[str, LoRABase] = {}
        self.loaded: dict[str, tuple[str, str]] = {}  # run-time adapters: name -> (lora_path, base)
        self._ids = itertools.count(1)
        self._lock = asyncio.Lock()

    async def add(self, base: LoRABase, name: str, directory: Path) -> None:
        """Serve the adapter in ``directory`` as ``name`` on ``base`` (checked first: a bad one is a 400)."""
        from vllm.lora.request import LoRARequest

        if self.registry.find(name) is not None:
            raise bad_request(f"The model name '{name}' is already in use.", param="lora_name")
        await asyncio.to_thread(check_adapter, directory, base.weights, base.max_rank)
        served = self.registry.get(base.id)
        engine = cast(VLLMGenerator, served.engine)
        adapter = LoRARequest(lora_name=name, lora_int_id=next(self._ids), lora_path=str(directory))
        try:
            await engine.add_adapter(adapter)
        except Exception as exc:  # vLLM's message may hold paths: the client gets ours
            logger.warning("adapter %s refused by the engine: %s", name, type(exc).__name__)
            raise refused("The engine could not load the adapter.") from exc
        view = ServedModel(name, "chat", engine.with_adapter(adapter), served.owned_by, int(time.time()), (), base.id)
        self.registry.add(view)
        logger.info("serving LoRA adapter %s on %s", name, base.id)

    async def load(self, name: str, path: str, base: str | None) -> None:
        async with self._lock:
            chosen = self.base(base)
            await self.add(chosen, name, find_adapter(path, self.adapters_dir, self.find_tag))
            self.loaded[name] = (path, chosen.id)
            self.save()

    async def unload(self, name: str) -> None:
        async with self._lock:
            model = self.registry.find(name)
            if model is None or model.parent is None:
                raise model_not_found(name)
            # As vLLM's own unload: no new request reaches it; the engine's LRU cache (max_cpu_loras) drops it
            # later, never under a request still running with it.
            self.registry.remove(name)
            self.loaded.pop(name, None)
            self.save()

    def base(self, name: str | None) -> LoRABase:
        if name is not None:
            if name not in self.bases:
                raise bad_request(f"The model '{name}' takes no LoRA adapters.", param="base_model")
            return self.bases[name]
        if len(self.bases) != 1:
            raise bad_request("Name the base model ('base_model'): none or several take adapters.", "base_model")
        return next(iter(self.bases.values()))

    def save(self) -> None:
        entries = [
            {"lora_name": name, "lora_path": path, "base_model": base} for name, (path, base) in self.loaded.items()
        ]
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.state_file.with_suffix(".tmp")
        temporary.write_text(json.dumps(entries, indent=1))
        temporary.replace(self.state_file)

    async def restore(self) -> None:
        """Load again the adapters loaded at run time before the last stop; one that fails now is logged, dropped."""
        if not self.state_file.is_file():
            return
        for entry in json.loads(self.state_file.read_text()):
            try:
                await self.load(entry["lora_name"], entry["lora_path"], entry["base_model"])
            except Exception as exc:
                logger.warning("LoRA adapter %s not loaded again: %s", entry.get("lora_name"), exc)
        self.save()
