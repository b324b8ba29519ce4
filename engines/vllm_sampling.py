"""``SamplingOptions`` as vLLM's ``SamplingParams``: the model's generation defaults for what a request leaves
unset, streamed deltas, structured outputs, and vLLM's refusals translated (``vllm_errors``)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from engines.generation_defaults import resolve_defaults, with_defaults
from engines.vllm_errors import translate
from openai_routes.core.engine import SamplingOptions, StructuredOutput

OPTIONAL_SAMPLING = (
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "repetition_penalty",
    "logit_bias",
    "logprobs",
    "prompt_logprobs",
)  # passed to vLLM only when set: vLLM's own default otherwise


def checked_defaults(model_config: Any, overrides: Mapping[str, float | int] | None) -> dict[str, Any]:
    """The model's ``generation_config.json`` sampling fields under the config's overrides, checked once here
    so that a bad value fails the start, not every request."""
    from vllm import SamplingParams

    defaults = resolve_defaults(model_config.get_diff_sampling_param(), overrides)
    try:
        SamplingParams(**defaults)
    except Exception as exc:
        raise ValueError(f"invalid generation defaults {defaults}: {exc}") from exc
    return defaults


def sampling_params(options: SamplingOptions, defaults: Mapping[str, Any], skip_special_tokens: bool) -> Any:
    """vLLM's ``SamplingParams`` for ``options`` (``DELTA`` output: each step carries only what is new)."""
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    options = with_defaults(options, defaults)  # what the request left unset, as `vllm serve` does
    optional = {name: getattr(options, name) for name in OPTIONAL_SAMPLING}
    if options.n > 1 and options.temperature == 0:
        optional.update(temperature=1.0, top_k=1)  # greedy for every choice; vLLM refuses n > 1 at temperature 0
    try:
        return SamplingParams(
            n=options.n,
            max_tokens=options.max_tokens,
            min_tokens=options.min_tokens,
            stop=list(options.stop),
            ignore_eos=options.ignore_eos,
            output_kind=RequestOutputKind.DELTA,
            structured_outputs=structured_params(options.structured),
            skip_special_tokens=skip_special_tokens,
            **{name: value for name, value in optional.items() if value is not None},
        )
    except Exception as exc:
        raise translate(exc, options.structured) from exc


def structured_params(structured: StructuredOutput | None) -> Any:
    """vLLM's ``StructuredOutputsParams`` for a constraint (None without one)."""
    from vllm.sampling_params import StructuredOutputsParams

    if structured is None:
        return None
    if structured.json_object:
        return StructuredOutputsParams(json_object=True)
    if structured.structural_tag is not None:
        return StructuredOutputsParams(structural_tag=json.dumps(structured.structural_tag))
    return StructuredOutputsParams(json=structured.json_schema)
