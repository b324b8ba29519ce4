"""vLLM's bodies for loading and unloading LoRA adapters at run time (``vllm/entrypoints/serve/lora/protocol.py``),
plus ``base_model``: which base to load onto when more than one takes adapters."""

from __future__ import annotations

from pydantic import BaseModel, Field


class LoadLoRAAdapterRequest(BaseModel):
    lora_name: str = Field(min_length=1, max_length=256, description="The model id the adapter is served as.")
    lora_path: str = Field(
        min_length=1, max_length=256, description="A directory name under adapters_dir, or a BentoML model tag."
    )
    base_model: str | None = Field(default=None, description="The base model (needed when several take adapters).")


class UnloadLoRAAdapterRequest(BaseModel):
    lora_name: str = Field(min_length=1, max_length=256)
