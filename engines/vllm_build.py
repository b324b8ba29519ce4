"""Building a model's vLLM ``AsyncLLM`` from its config entry: the engine arguments, with the structured outputs
config vLLM expects as an object (YAML gives a mapping) and the reasoning parser the grammar starts after."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vllm.v1.engine.async_llm import AsyncLLM


def build_async_llm(
    model_path: str, engine_args: dict[str, Any], runner: str, reasoning_parser: str | None = None
) -> AsyncLLM:
    """Start an ``AsyncLLM`` (spawns the engine core process; about 30 s on CPU for the default model). With a
    reasoning parser, the grammar of a constrained format starts after the reasoning, as ``vllm serve
    --reasoning-parser`` sets it."""
    from vllm.config import StructuredOutputsConfig
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.v1.engine.async_llm import AsyncLLM

    engine_args = dict(engine_args)
    structured = dict(engine_args.get("structured_outputs_config") or {})  # YAML gives a mapping
    if reasoning_parser:
        structured.setdefault("reasoning_parser", reasoning_parser)
    if structured:
        engine_args["structured_outputs_config"] = StructuredOutputsConfig(**structured)
    args = AsyncEngineArgs(model=model_path, runner=runner, **engine_args)  # type: ignore[arg-type]
    return AsyncLLM.from_engine_args(args)
