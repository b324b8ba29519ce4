"""The container image a Bento gets: Python 3.11 with the service's dependencies and the engine group for the
config's platform, read from ``pyproject.toml`` so the image and ``make install`` never disagree.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal

import bentoml

ROOT = Path(__file__).resolve().parent
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"  # image builds only; never used on this machine


def engine_packages(platform: Literal["cpu", "gpu"]) -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    groups = project["dependency-groups"]
    return [*groups["service"], *groups[platform]]


def build_image(platform: Literal["cpu", "gpu"]) -> bentoml.images.Image:
    # Locking runs uv, which cannot see torch's CPU wheel; the pins in pyproject.toml are exact instead.
    image = bentoml.images.Image(python_version="3.11", lock_python_packages=False)
    if platform == "cpu":
        image = image.python_packages(f"--extra-index-url {TORCH_CPU_INDEX}")
    image = image.python_packages(*engine_packages(platform))
    # PyPI's torchvision/torchaudio (pulled in by vllm) crash on import beside the CPU torch build.
    return image.run("pip uninstall -y torchvision torchaudio torchcodec || true") if platform == "cpu" else image
