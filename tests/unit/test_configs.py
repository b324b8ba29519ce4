"""Every config in ``configs/`` loads, and what the service declares from it (image, envs, resources, model
references) and the BentoCloud deployment files are valid: no download, no engine, no network.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import attrs
import pytest
import yaml
from _bentoml_sdk.models import BentoModel, HuggingFaceModel
from _bentoml_sdk.service.config import validate as validate_service_config
from bentoml._internal.bento.build_config import BentoEnvSchema
from bentoml._internal.cloud.deployment import DeploymentAPI
from bentoml._internal.cloud.schemas.modelschemas import DeploymentServiceConfig
from bentoml._internal.cloud.schemas.schemasv2 import CreateDeploymentSchema
from bentoml._internal.utils.cattr import bentoml_cattr

import service
from bento_image import Platform, build_envs
from settings import ROOT, ServiceConfig, load_config

CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
DEPLOYMENTS = sorted((ROOT / "configs" / "bentocloud").glob("*.yaml"))


def by_name(paths: list[Path]) -> pytest.MarkDecorator:
    return pytest.mark.parametrize("path", paths, ids=[path.stem for path in paths])


def registered_tool_parsers() -> str:
    """vLLM registers its tool parsers by name in ``vllm/tool_parsers/__init__.py``; importing vLLM takes ~10 s."""
    spec = importlib.util.find_spec("vllm")
    assert spec is not None and spec.origin is not None
    return (Path(spec.origin).parent / "tool_parsers" / "__init__.py").read_text()


def test_there_are_gpu_configs_for_llama_and_qwen() -> None:
    names = {path.stem for path in CONFIGS}
    assert {"default", "llama-3.1-8b-instruct", "qwen2.5-7b-instruct", "qwen3-4b"} <= names


@by_name(CONFIGS)
def test_config_loads_and_its_resources_are_valid_for_bentoml(path: Path) -> None:
    config = load_config(path)
    validate_service_config({"resources": config.resources})
    if config.platform == "cpu":
        assert "gpu" not in config.resources
        assert "VLLM_CPU_KVCACHE_SPACE" in config.env, "vLLM's CPU backend needs a KV cache size"


@by_name(CONFIGS)
def test_config_sets_a_traffic_option_bentoml_accepts(path: Path) -> None:
    """Every shipped config gives BentoCloud's autoscaler a concurrency (README, "Choosing traffic.concurrency")."""
    config = load_config(path)
    traffic = config.traffic.service_option()
    validate_service_config({"traffic": traffic})
    assert config.traffic.concurrency is not None, "without it BentoCloud scales on CPU use"
    assert traffic["concurrency"] <= min([config.limits.max_in_flight, *engine_seq_limits(config)])


def engine_seq_limits(config: ServiceConfig) -> list[int]:
    """The chat engines' own batch size (``max_num_seqs``) where a config sets one."""
    return [int(model.engine["max_num_seqs"]) for model in config.models if "max_num_seqs" in model.engine]


@by_name([path for path in CONFIGS if load_config(path).platform == "gpu"])
def test_gpu_config_declares_what_a_gpu_deployment_needs(path: Path) -> None:
    config = load_config(path)
    parsers = registered_tool_parsers()
    parallel = [int(model.engine.get("tensor_parallel_size", 1)) for model in config.models]
    assert config.resources["gpu"] == max(parallel), "one GPU per tensor-parallel rank"
    assert config.resources.get("gpu_type")
    for model in config.models:
        assert model.source.huggingface, f"{model.id}: GPU configs fetch weights from Hugging Face"
        assert model.engine["dtype"] == "bfloat16"
        assert isinstance(model.engine["max_model_len"], int)
        if model.task == "chat":
            assert model.tool_call_parser, f"{model.id}: tools need a parser"
            assert f'"{model.tool_call_parser}": (' in parsers, f"vLLM has no {model.tool_call_parser!r} parser"


def test_tool_call_parsers_match_the_model_families() -> None:
    parsers = {
        model.id: (model.tool_call_parser, model.reasoning_parser)
        for name in ("llama-3.1-8b-instruct", "qwen2.5-7b-instruct", "qwen3-4b")
        for model in load_config(f"configs/{name}.yaml").models
    }
    assert parsers == {
        "meta-llama/Llama-3.1-8B-Instruct": ("llama3_json", None),
        "Qwen/Qwen2.5-7B-Instruct": ("hermes", None),
        "Qwen/Qwen3-4B": ("hermes", "qwen3"),
    }


def test_reasoning_parsers_are_vllms() -> None:
    from vllm.reasoning import ReasoningParserManager

    for path in CONFIGS:
        for model in load_config(path).models:
            if model.reasoning_parser:
                assert ReasoningParserManager.get_reasoning_parser(model.reasoning_parser), model.reasoning_parser


@pytest.mark.parametrize("platform", ["cpu", "gpu"])
def test_envs_are_the_configs_engine_env_at_runtime(platform: Platform) -> None:
    envs = [BentoEnvSchema(**env) for env in build_envs(platform, {"VLLM_X": "1"})]
    assert BentoEnvSchema("VLLM_X", "1", "runtime") in envs
    # The CPU image's uv must weigh PyTorch's index against PyPI, not stop at the first index with a name.
    assert (BentoEnvSchema("UV_INDEX_STRATEGY", "unsafe-best-match", "all") in envs) == (platform == "cpu")
    assert all(env.value for env in envs), "an env without a value makes `bentoml serve` fail when it is unset"


def test_service_declares_the_default_configs_models_envs_and_resources() -> None:
    config = load_config("configs/default.yaml")
    assert config == service.CONFIG  # pytest passes no --arg: the service loads the default
    assert [model.tag.name for model in service.BentoOAI.models] == [model.source.bentoml for model in config.models]
    assert service.BentoOAI.envs == [BentoEnvSchema(**env) for env in build_envs(config.platform, config.env)]
    assert service.BentoOAI.config["resources"] is None
    assert service.BentoOAI.config["traffic"] == config.traffic.service_option()


@by_name(CONFIGS)
def test_model_references_are_declared_without_resolving(path: Path) -> None:
    models = load_config(path).models
    for source in [model.source for model in models] + [
        adapter.source for model in models for adapter in model.adapters
    ]:
        reference = service.model_reference(source)
        if source.bentoml:
            assert isinstance(reference, BentoModel)
            assert str(reference.tag.name) == source.bentoml.split(":")[0]
        elif source.huggingface:
            assert isinstance(reference, HuggingFaceModel)
            assert (reference.model_id, reference.revision) == (source.huggingface, source.revision)
            assert "original/*" in (reference.exclude or []), "never download Meta's duplicate original checkpoint"
            assert "commit_hash" not in reference.__dict__, "declaring a model must not ask the hub"
        else:
            assert reference is None


def deployment_config(path: Path) -> dict[str, Any]:
    loaded = yaml.safe_load(path.read_text())
    assert isinstance(loaded, dict)
    return loaded


@by_name(DEPLOYMENTS)
def test_bentocloud_deployment_matches_bentomls_schema(path: Path) -> None:
    config = deployment_config(path)
    # The schemas ignore unknown keys, so a typo (``scailing``) would deploy silently without it: check names.
    assert set(config) <= {field.name for field in attrs.fields(CreateDeploymentSchema)} | {"cluster"}
    assert set(config["services"]) == {service.BentoOAI.name}
    for options in config["services"].values():
        assert set(options) <= {field.name for field in attrs.fields(DeploymentServiceConfig)}
        assert options["instance_type"]
        assert 0 <= options["scaling"]["min_replicas"] <= options["scaling"]["max_replicas"]
    schema = bentoml_cattr.structure({**config, "bento": "bento-oai:test"}, CreateDeploymentSchema)
    DeploymentAPI._fix_and_validate_schema(schema)
    assert all(env.value for env in schema.envs or [])


@by_name(DEPLOYMENTS)
def test_bentocloud_deployment_fits_its_config(path: Path) -> None:
    config: ServiceConfig = load_config(f"configs/{path.name}")
    deployment = deployment_config(path)
    options = next(iter(deployment["services"].values()))
    # Both checks read the Bearer header: exactly one of them guards a deployment (README, "Build and deploy").
    assert deployment["access_authorization"] == (config.auth.mode == "disabled")
    if config.auth.mode == "keys":
        assert "bento-oai-api-keys" in deployment["secrets"], "BENTO_OAI_API_KEYS comes from a secret, not the file"
    if options["scaling"]["min_replicas"] == 0:
        assert config.traffic.external_queue, "scaled to zero, requests wait in BentoCloud's queue for a replica"
    if config.platform == "gpu":
        assert options["instance_type"].startswith("gpu.")
        assert "huggingface" in deployment["secrets"], "HF_TOKEN fetches the weights"
    else:
        assert options["instance_type"].startswith("cpu.")
