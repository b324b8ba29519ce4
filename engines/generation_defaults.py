"""A model's sampling defaults: what a request that omits a field gets, as ``vllm serve`` does.

The defaults are the model's ``generation_config.json`` (as vLLM reads it, ``get_diff_sampling_param``) with
the config's ``generation_defaults`` laid over it, per field. Only fields a request can also set are kept
(``max_new_tokens`` is not: our limits decide ``max_tokens``). Pure functions, no vLLM import: the unit tests
and ``settings.py`` use them without an engine.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from openai_routes.core.engine import SamplingOptions

GENERATION_FIELDS = (
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "repetition_penalty",
    "presence_penalty",
    "frequency_penalty",
)


def unknown_fields(overrides: Mapping[str, Any]) -> list[str]:
    """The keys of ``overrides`` that are no generation default (sorted, for the error message)."""
    return sorted(set(overrides) - set(GENERATION_FIELDS))


def resolve_defaults(model_defaults: Mapping[str, Any], overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """The effective defaults: the model's sampling fields, then the config's overrides (the config wins)."""
    defaults = {name: model_defaults[name] for name in GENERATION_FIELDS if model_defaults.get(name) is not None}
    defaults.update(overrides or {})
    return defaults


def with_defaults(options: SamplingOptions, defaults: Mapping[str, Any]) -> SamplingOptions:
    """``options`` with each field the request left unset (``None``) taken from ``defaults``."""
    missing = {name: value for name, value in defaults.items() if getattr(options, name) is None}
    return dataclasses.replace(options, **missing) if missing else options
