"""From a config's model entries to started engines in the registry (``ServedModel``), and back to stopped ones.

The one place that knows which engine serves which task: ``VLLMEmbedder`` for ``embed``, ``VLLMGenerator`` (with
the entry's parsers, chat template and generation defaults) for ``chat``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from engines.cpu_dtype import resolve_dtype
from engines.vllm_build import build_async_llm
from engines.vllm_embedder import VLLMEmbedder
from engines.vllm_generator import VLLMGenerator
from openai_routes.core.registry import ModelRegistry, ServedModel

if TYPE_CHECKING:
    from settings import ModelConfig

logger = logging.getLogger(__name__)


def start_engine(
    model: ModelConfig, model_path: str, shutdown_grace: float, on_cpu: bool
) -> VLLMEmbedder | VLLMGenerator:
    """Start ``model``'s engine from the weights at ``model_path`` (blocks until the engine core runs). vLLM's
    engine processes get ``shutdown_grace`` to finish in-flight work when signalled (circus signals them too);
    ``dtype: auto`` is this machine's decision on CPU (``engines.cpu_dtype``)."""
    dtype = resolve_dtype(model.id, model_path, model.engine, model.runner, on_cpu=on_cpu)
    engine_args = {"shutdown_timeout": int(shutdown_grace), **model.engine, "dtype": dtype}
    llm = build_async_llm(model_path, engine_args, model.runner, model.reasoning_parser)
    if model.task == "embed":
        return VLLMEmbedder(llm)
    return VLLMGenerator(
        llm,
        model.tool_call_parser,
        model.reasoning_parser,
        chat_template=model.chat_template_text,
        generation_defaults=model.generation_defaults,
    )


def start_model(model: ModelConfig, model_path: str, shutdown_grace: float, on_cpu: bool) -> ServedModel:
    """``model`` started and named as the registry serves it (its id, aliases, task and owner)."""
    logger.info("starting the %s engine for %s (about a minute on CPU)", model.runner, model.id)
    started = time.monotonic()
    engine = start_engine(model, model_path, shutdown_grace, on_cpu)
    logger.info("%s ready in %.0f s", model.id, time.monotonic() - started)
    if isinstance(engine, VLLMGenerator):
        defaults = engine.capabilities.sampling_defaults or "vLLM's neutral ones"
        logger.info("%s: sampling defaults for requests that omit them: %s", model.id, defaults)
    return ServedModel(model.id, model.task, engine, model.owned_by, int(time.time()), tuple(model.aliases))


async def start_models(
    registry: ModelRegistry, models: Sequence[tuple[ModelConfig, str]], shutdown_grace: float, *, on_cpu: bool
) -> None:
    """Start each ``(entry, weights path)`` and add it to ``registry`` in configuration order. What started is in
    the registry (and shuts down with it) even when another start failed; that failure is then raised.

    ``on_cpu``: each engine starts in a thread of its own, all at once. Building an ``AsyncLLM`` blocks while
    its engine core loads and warms up in processes of its own, so on CPU the starts overlap (the default config
    is ready in 29.5 s instead of 36: docs/architecture.md, "Starting the engines"). Built off the loop, an
    ``AsyncLLM`` starts its output tasks on its first request instead (vLLM supports both). Not on GPU: each engine
    sizes its KV cache from the device memory it finds free, which an engine starting beside it would be taking.
    """
    if not on_cpu:
        for model, path in models:  # on the loop, which vLLM starts its tasks on
            registry.add(start_model(model, path, shutdown_grace, on_cpu))
        return
    starts = [asyncio.to_thread(start_model, model, path, shutdown_grace, on_cpu) for model, path in models]
    results = await asyncio.gather(*starts, return_exceptions=True)
    for result in results:
        if isinstance(result, ServedModel):
            registry.add(result)
    if failures := [result for result in results if isinstance(result, BaseException)]:
        raise failures[0]


def stop_model(model: ServedModel) -> None:
    """Shut down the engine ``start_model`` started for ``model`` (its engine core processes, its tokenizer thread)."""
    model.engine.shutdown()
