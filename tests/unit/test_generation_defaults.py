"""Generation defaults: the model's ``generation_config.json`` fields under the config's overrides fill what a
request leaves unset, a request's own value wins, and the config refuses fields that are no sampling default."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from pydantic import ValidationError

from engines.generation_defaults import GENERATION_FIELDS, resolve_defaults, unknown_fields, with_defaults
from openai_routes.core.engine import SamplingOptions
from settings import ServiceConfig

# What vLLM's ``get_diff_sampling_param`` gives for a greedy generation_config.json with a length limit.
MODEL_FILE = {"temperature": 1.0, "top_k": 1, "max_tokens": 256}


def test_the_models_sampling_fields_are_kept_and_max_tokens_is_not() -> None:
    assert resolve_defaults(MODEL_FILE, None) == {"temperature": 1.0, "top_k": 1}


def test_the_config_overrides_per_field() -> None:
    assert resolve_defaults(MODEL_FILE, {"top_k": 50, "min_p": 0.05}) == {
        "temperature": 1.0,
        "top_k": 50,
        "min_p": 0.05,
    }


def test_no_file_and_no_overrides_means_no_defaults() -> None:
    assert resolve_defaults({}, None) == {}
    assert resolve_defaults({}, {}) == {}


def test_unset_fields_take_the_default_and_set_ones_keep_the_request_value() -> None:
    options = SamplingOptions(max_tokens=8, temperature=0.7, seed=3)
    filled = with_defaults(options, {"temperature": 1.0, "top_k": 1, "repetition_penalty": 1.1})
    assert (filled.temperature, filled.top_k, filled.repetition_penalty, filled.seed) == (0.7, 1, 1.1, 3)
    assert with_defaults(options, {}) is options


def test_only_generation_fields_are_known() -> None:
    assert unknown_fields({"top_k": 1, "seed": 3, "max_tokens": 9}) == ["max_tokens", "seed"]
    assert unknown_fields(dict.fromkeys(GENERATION_FIELDS, 1)) == []


def config(**model: Any) -> dict[str, Any]:
    return {"models": [{"id": "chat", "source": {"bentoml": "chat-model"}, **model}]}


def test_the_config_takes_overrides_and_none_by_default() -> None:
    assert ServiceConfig.model_validate(config()).models[0].generation_defaults is None
    loaded = ServiceConfig.model_validate(config(generation_defaults={"top_k": 50, "temperature": 0.6}))
    assert loaded.models[0].generation_defaults == {"top_k": 50, "temperature": 0.6}


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ({"generation_defaults": {"top_k": 50, "max_new_tokens": 9}}, "unknown fields max_new_tokens"),
        ({"generation_defaults": {"top_k": "many"}}, "generation_defaults.top_k"),
        ({"task": "embed", "generation_defaults": {"top_k": 50}}, "for chat models only"),
    ],
)
def test_the_config_refuses_what_is_no_sampling_default(model: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ServiceConfig.model_validate(config(**copy.deepcopy(model)))


# --- vLLM's SamplingParams (imports vLLM: about 20 s) -------------------------------------------------------------


class FakeModelConfig:
    """What ``checked_defaults`` reads of vLLM's model config: the sampling fields of its generation_config.json."""

    def __init__(self, diff: dict[str, Any]) -> None:
        self.diff = diff

    def get_diff_sampling_param(self) -> dict[str, Any]:
        return dict(self.diff)


def params(diff: dict[str, Any], overrides: dict[str, float | int] | None, options: SamplingOptions) -> Any:
    from engines.vllm_sampling import checked_defaults, sampling_params

    return sampling_params(options, checked_defaults(FakeModelConfig(diff), overrides), skip_special_tokens=True)


def test_sampling_params_apply_the_models_defaults_under_the_request() -> None:
    silent = params(MODEL_FILE, {"repetition_penalty": 1.2}, SamplingOptions(max_tokens=8))
    assert (silent.temperature, silent.top_k, silent.repetition_penalty, silent.max_tokens) == (1.0, 1, 1.2, 8)
    own = params(MODEL_FILE, {"repetition_penalty": 1.2}, SamplingOptions(max_tokens=8, temperature=0.5, top_k=50))
    assert (own.temperature, own.top_k) == (0.5, 50)


def test_a_config_override_unpins_the_models_greedy_default() -> None:
    chosen = params(MODEL_FILE, {"top_k": 50}, SamplingOptions(max_tokens=8))
    assert (chosen.temperature, chosen.top_k) == (1.0, 50)


def test_n_above_one_at_a_default_temperature_of_zero_stays_greedy() -> None:
    chosen = params({"temperature": 0.0}, None, SamplingOptions(max_tokens=8, n=2))
    assert (chosen.n, chosen.temperature, chosen.top_k) == (2, 1.0, 1)


def test_a_default_vllm_refuses_fails_the_start() -> None:
    from engines.vllm_sampling import checked_defaults

    with pytest.raises(ValueError, match="invalid generation defaults"):
        checked_defaults(FakeModelConfig({}), {"top_p": 0})
