"""``engines.lora_files``: which directory a ``lora_path`` names (never one outside the adapters directory), and the
checks that refuse an adapter before vLLM reads it (config, weights, rank, shapes against the base's)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from engines.lora_files import check_adapter, find_adapter
from openai_routes.core.engine import EngineInputError

MODULE = "model.layers.0.self_attn.q_proj"


def no_tag(_tag: str) -> Path | None:
    return None


@pytest.fixture
def adapters(tmp_path: Path) -> Path:
    directory = tmp_path / "adapters"
    (directory / "good").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    (directory / "escape").symlink_to(tmp_path / "outside")
    (directory / "inside").symlink_to(directory / "good")
    return directory


def test_a_directory_name_in_the_adapters_directory(adapters: Path) -> None:
    assert find_adapter("good", adapters, no_tag) == (adapters / "good").resolve()
    assert find_adapter("inside", adapters, no_tag) == (adapters / "good").resolve()  # a symlink that stays in


@pytest.mark.parametrize("lora_path", ["/etc", "../outside", "good/../../outside", "escape", ".", "x\x00"])
def test_nothing_outside_the_adapters_directory(adapters: Path, lora_path: str) -> None:
    with pytest.raises(EngineInputError) as refused:
        find_adapter(lora_path, adapters, lambda _tag: adapters.parent / "outside")
    assert refused.value.param == "lora_path" and str(adapters) not in str(refused.value)


def test_else_a_bentoml_model_tag(adapters: Path, tmp_path: Path) -> None:
    assert find_adapter("tuned:v1", adapters, lambda tag: tmp_path if tag == "tuned:v1" else None) == tmp_path
    with pytest.raises(EngineInputError, match="No adapter named 'nothing'"):
        find_adapter("nothing", adapters, no_tag)


def write_adapter(directory: Path, rank: int = 2, a_in: int = 4, b_out: int = 8, module: str = MODULE) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": rank}))
    weights = {
        f"base_model.model.{module}.lora_A.weight": torch.zeros(rank, a_in),
        f"base_model.model.{module}.lora_B.weight": torch.zeros(b_out, rank),
    }
    save_file(weights, str(directory / "adapter_model.safetensors"))
    return directory


@pytest.fixture
def base(tmp_path: Path) -> Path:
    directory = tmp_path / "base"
    directory.mkdir()
    save_file({f"{MODULE}.weight": torch.zeros(8, 4)}, str(directory / "model.safetensors"))
    return directory


def test_an_adapter_that_fits(tmp_path: Path, base: Path) -> None:
    check_adapter(write_adapter(tmp_path / "a"), base, max_rank=8)


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ({"rank": 16}, "rank 16 is over this model's max_lora_rank 8"),
        ({"a_in": 5}, "do not fit the base model's shapes"),
        ({"b_out": 9}, "do not fit the base model's shapes"),
        ({"module": "model.layers.0.self_attn.o_proj"}, "a module the base model does not have"),
    ],
)
def test_an_adapter_that_does_not_fit(tmp_path: Path, base: Path, shape: dict[str, object], message: str) -> None:
    with pytest.raises(EngineInputError, match=message):
        check_adapter(write_adapter(tmp_path / "a", **shape), base, max_rank=8)  # type: ignore[arg-type]


def test_missing_or_broken_files(tmp_path: Path, base: Path) -> None:
    adapter = write_adapter(tmp_path / "a")
    (adapter / "adapter_model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(EngineInputError, match="not a readable safetensors"):
        check_adapter(adapter, base, max_rank=8)
    (adapter / "adapter_model.safetensors").unlink()
    with pytest.raises(EngineInputError, match=r"no adapter_model\.safetensors"):
        check_adapter(adapter, base, max_rank=8)
    (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "PROMPT_TUNING"}))
    with pytest.raises(EngineInputError, match="not a PEFT LoRA config"):
        check_adapter(adapter, base, max_rank=8)
    (adapter / "adapter_config.json").unlink()
    with pytest.raises(EngineInputError, match=r"no readable adapter_config\.json"):
        check_adapter(adapter, base, max_rank=8)
