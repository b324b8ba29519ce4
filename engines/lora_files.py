"""A LoRA adapter's files, found and checked before vLLM reads them (no vLLM import).

``find_adapter`` turns ``/v1/load_lora_adapter``'s ``lora_path`` into a directory: one directory name under the
config's ``adapters_dir`` (resolved, symlinks too, and required to stay inside it) or a BentoML model tag; never an
absolute path or one with ``..``. ``check_adapter`` refuses what would fail in the engine: no PEFT LoRA config, no
weights, a rank over ``max_lora_rank``, or a weight whose shape does not fit the base model's module (read from the
safetensors headers: nothing is loaded). Every refusal is an ``EngineInputError`` on ``lora_path`` whose message
names no path of the server.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from openai_routes.core.engine import EngineInputError

PARAM = "lora_path"
WEIGHTS = "adapter_model.safetensors"


def refused(message: str) -> EngineInputError:
    return EngineInputError(message, param=PARAM)


def find_adapter(lora_path: str, adapters_dir: Path, find_tag: Callable[[str], Path | None]) -> Path:
    """The adapter directory ``lora_path`` names: a directory in ``adapters_dir``, else a BentoML model."""
    if Path(lora_path).parts != (lora_path,) or lora_path == ".." or "\x00" in lora_path:  # one name, no "/"
        raise refused("'lora_path' must be a directory name in the adapters directory or a BentoML model tag.")
    if (adapters_dir / lora_path).exists():
        root = adapters_dir.resolve()
        found = (adapters_dir / lora_path).resolve()
        if not found.is_relative_to(root) or found == root or not found.is_dir():
            raise refused("'lora_path' leads outside the adapters directory.")
        return found
    tagged = find_tag(lora_path)
    if tagged is None:
        raise refused(f"No adapter named '{lora_path}' in the adapters directory nor in the BentoML store.")
    return tagged


def bentoml_model(tag: str) -> Path | None:
    """The directory of the BentoML store's model ``tag`` (``name`` or ``name:version``), if there is one."""
    import bentoml

    try:
        return Path(bentoml.models.get(tag).path)
    except Exception:  # not found, or not a valid tag
        return None


def check_adapter(adapter: Path, base: Path, max_rank: int) -> None:
    """Refuse an adapter the base at ``base`` (its safetensors) cannot take with ``max_rank``."""
    config = read_config(adapter)
    pattern = config.get("rank_pattern")
    ranks = [config.get("r"), *(pattern.values() if isinstance(pattern, dict) else ())]
    if not all(isinstance(rank, int) and rank > 0 for rank in ranks):
        raise refused("The adapter's adapter_config.json has no valid rank 'r'.")
    if max(ranks) > max_rank:
        raise refused(f"The adapter's rank {max(ranks)} is over this model's max_lora_rank {max_rank}.")
    if not (adapter / WEIGHTS).is_file():
        raise refused(f"The adapter has no {WEIGHTS}.")
    check_shapes(shapes(adapter / WEIGHTS), base_shapes(base))


def read_config(adapter: Path) -> dict[str, object]:
    try:
        config = json.loads((adapter / "adapter_config.json").read_text())
    except (OSError, ValueError):
        raise refused("The adapter has no readable adapter_config.json.") from None
    if not isinstance(config, dict) or config.get("peft_type", "LORA") != "LORA":
        raise refused("The adapter's adapter_config.json is not a PEFT LoRA config.")
    return config


def shapes(file: Path) -> dict[str, list[int]]:
    """Every tensor's shape in a safetensors file, from its header."""
    from safetensors import safe_open

    try:
        with safe_open(str(file), framework="pt") as tensors:
            return {name: list(tensors.get_slice(name).get_shape()) for name in tensors.keys()}  # noqa: SIM118
    except Exception:
        raise refused("The adapter's weights are not a readable safetensors file.") from None


def base_shapes(base: Path) -> dict[str, list[int]]:
    found: dict[str, list[int]] = {}
    for file in sorted(base.glob("*.safetensors")):
        found.update(shapes(file))
    return found


def check_shapes(adapter: dict[str, list[int]], base: dict[str, list[int]]) -> None:
    """Each ``<module>.lora_A.weight`` ``[r, in]`` and ``<module>.lora_B.weight`` ``[out, r]`` against the base's
    ``<module>.weight`` ``[out, in]`` (PEFT prefixes names with ``base_model.model.``)."""
    for name, shape in adapter.items():
        module, _, part = name.removeprefix("base_model.model.").rpartition(".lora_")
        if part not in ("A.weight", "B.weight"):
            continue
        target = base.get(f"{module}.weight")
        if target is None or len(target) != 2 or len(shape) != 2:
            raise refused(f"The adapter targets a module the base model does not have ({module}).")
        if (part == "A.weight" and shape[1] != target[1]) or (part == "B.weight" and shape[0] != target[0]):
            raise refused(f"The adapter's weights for {module} do not fit the base model's shapes.")
