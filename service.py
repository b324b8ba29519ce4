"""The BentoML service: owns one vLLM engine per configured model and mounts the OpenAI app at ``/v1`` (and the
root-level ``/tokenize``, ``/detokenize`` and the playground page at ``/``).

Wiring only: the config (``--arg config=configs/<name>.yaml``, default ``configs/default.yaml``) chooses the
models; each is a class attribute (``BentoModel`` / ``HuggingFaceModel``) so ``bentoml build`` packages it.
Engines start in an async startup hook and shut down on shutdown; ``/readyz`` is 200 once every engine
can serve, ``/livez`` turns 503 when an engine dies.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Any

import bentoml
from pydantic import BaseModel

from bento_image import build_envs, build_image
from engines.factory import start_models, stop_model
from engines.lora_adapters import LoRAAdapters, LoRABase
from engines.lora_files import bentoml_model
from openai_routes.app import create_app, create_root_app
from openai_routes.core.metrics import ServerMetrics, engine_gauges
from openai_routes.core.registry import ModelRegistry
from openai_routes.endpoints.batches.runner import BatchRunner
from openai_routes.server.access_log import AccessLog
from openai_routes.server.auth import KeyRing, read_keys
from openai_routes.server.envelope import OpenAIErrorEnvelope
from openai_routes.server.guard import Drain
from openai_routes.server.lifecycle import Lifecycle, freeze_startup_heap
from openai_routes.server.loop_watch import LoopWatch
from openai_routes.store.book import ResponseBook
from settings import DEFAULT_CONFIG, ModelSource, load_config

logger = logging.getLogger("bento_oai")
for _name in ("bento_oai", "openai_routes", "engines"):  # BentoML leaves other loggers at WARNING
    logging.getLogger(_name).setLevel(logging.INFO)
# Meta's repos also carry the original consolidated checkpoint (16 GB for Llama-3.1-8B); vLLM reads safetensors.
HF_EXCLUDE = ["original/*", "*.pth"]


class Args(BaseModel):
    config: str = DEFAULT_CONFIG


CONFIG = load_config(bentoml.use_arguments(Args).config)
registry = ModelRegistry()
keyring = KeyRing()
admin_keys = KeyRing()
adapters = LoRAAdapters(
    registry,
    CONFIG.path(CONFIG.adapters_dir),
    CONFIG.path(CONFIG.store.data_dir) / "lora_adapters.json",
    find_tag=bentoml_model,
)
drain = Drain()
lifecycle = Lifecycle(drain, CONFIG.limits.shutdown_grace)
metrics = ServerMetrics()
# A response still unfinished this long after it began cannot be running any more (its deadline has passed).
book = ResponseBook(stale_after=CONFIG.limits.request_timeout + 60)
batch_runner = BatchRunner(book, registry, CONFIG.batches, metrics, drain)
app = create_app(
    registry,
    keyring,
    CONFIG.limits,
    metrics,
    drain,
    book,
    admin=(admin_keys, adapters),
    batch_runner=batch_runner,
    media=CONFIG.media,
)
root_app = create_root_app(
    registry, keyring, CONFIG.limits, drain, playground_page=CONFIG.playground, media=CONFIG.media
)


def model_attribute(index: int) -> str:
    return f"model_{index}"


def adapter_attribute(index: int, number: int) -> str:
    return f"model_{index}_adapter_{number}"


def model_reference(source: ModelSource) -> Any:
    """The BentoML model declaration for a config entry's (or adapter's) source (None for a local path)."""
    if source.bentoml:
        return bentoml.models.BentoModel(source.bentoml)
    if source.huggingface:
        return bentoml.models.HuggingFaceModel(source.huggingface, revision=source.revision, exclude=HF_EXCLUDE)
    return None


class BentoOAIService:
    @bentoml.on_startup
    async def start_engines(self) -> None:
        lifecycle.install()  # SIGTERM drain, and no engine process outliving the worker (nor the worker its arbiter)
        CONFIG.export_env()
        keyring.configure(CONFIG.auth.mode, os.environ.get("BENTO_OAI_API_KEYS"), CONFIG.auth.keys_file)
        store = CONFIG.store
        await book.open(store.database_url(os.environ), store.limits(CONFIG.limits), purge_every=store.purge_every)
        models = [
            (model, self.source_path(model_attribute(index), model.source)) for index, model in enumerate(CONFIG.models)
        ]
        await start_models(registry, models, CONFIG.limits.shutdown_grace, on_cpu=CONFIG.platform == "cpu")
        await self.start_adapters()
        batch_runner.start()
        freeze_startup_heap()
        # Last: the freeze (and engine starts on GPU, on the loop) hold the loop longer than a stall worth logging.
        LoopWatch(asyncio.get_running_loop(), quiet=lambda: drain.draining).start()

    def source_path(self, attribute: str, source: ModelSource) -> str:
        if source.path:
            return str(CONFIG.path(source.path))
        resolved = getattr(self, attribute)
        return resolved if isinstance(resolved, str) else str(resolved.path)

    async def start_adapters(self) -> None:
        """The config's LoRA adapters on their bases, then those loaded at run time before the last stop."""
        admin_keys.set_keys(read_keys(os.environ.get("BENTO_OAI_ADMIN_KEYS"), None))
        for index, model in enumerate(CONFIG.models):
            if not model.lora:
                continue
            weights = self.source_path(model_attribute(index), model.source)
            base = adapters.bases[model.id] = LoRABase(model.id, Path(weights), model.max_lora_rank)
            for number, adapter in enumerate(model.adapters):
                path = self.source_path(adapter_attribute(index, number), adapter.source)
                await adapters.add(base, adapter.id, Path(path))
        await adapters.restore()

    @bentoml.on_shutdown
    async def close_responses(self) -> None:
        """Before the engines stop (hooks run by name): batch lines running here are aborted and given back, and
        background responses still running are recorded failed."""
        await batch_runner.stop()
        await book.close()

    @bentoml.on_shutdown
    def stop_engines(self) -> None:
        models = registry.models()
        registry.clear()
        for model in models:
            stop_model(model)  # what an engine leaves running, the reaper kills when the worker exits (lifecycle)

    def __metrics__(self, text: str) -> str:
        return text + engine_gauges(registry)

    def __is_ready__(self) -> bool:
        return registry.ready() and not drain.draining

    def __is_alive__(self) -> bool:
        return all(model.engine.is_healthy() for model in registry.models())


for _index, _model in enumerate(CONFIG.models):
    _sources = {model_attribute(_index): _model.source}
    _sources |= {adapter_attribute(_index, number): adapter.source for number, adapter in enumerate(_model.adapters)}
    for _attribute, _source in _sources.items():
        if (_reference := model_reference(_source)) is not None:
            setattr(BentoOAIService, _attribute, _reference)

BentoOAI = bentoml.service(
    name="bento-oai",
    image=build_image(CONFIG.platform),
    envs=build_envs(CONFIG.platform, CONFIG.env),
    workers=1,
    traffic=CONFIG.traffic.service_option(),
    resources=CONFIG.resources or None,
    http=CONFIG.http_config(),
    # BentoML's OpenTelemetry middleware makes a span per ASGI message: one per streamed token. Traces are off
    # by default anyway (sample rate 0), so /v1 skips it; see the profile in benchmarks/results/latest.md.
    tracing={"excluded_urls": ["/v1/"]},
    logging={"access": {"enabled": False}},  # openai_routes.server.access_log logs each request, with its request id
)(bentoml.asgi_app(app, path="/v1")(bentoml.asgi_app(root_app, path="/")(BentoOAIService)))
# The first added runs outermost: request ids and the access line cover the rewritten 404/405s too.
BentoOAI.add_asgi_middleware(AccessLog, metrics=metrics)
BentoOAI.add_asgi_middleware(OpenAIErrorEnvelope)
