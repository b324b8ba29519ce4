"""A real LoRA adapter for the chat model, made by PEFT, and PEFT's own greedy answer with it (the reference the
e2e tests compare the service with).

The adapter is PEFT's non-zero initialisation (``init_lora_weights=False``, a fixed seed) of rank 8 on ``q_proj`` and
``v_proj`` with ``lora_alpha`` 24: strong enough to change SmolLM2-135M's answer to ``QUESTION`` (Paris becomes
another city), saved in PEFT's format. Everything runs in float32 on CPU.
"""

from __future__ import annotations

import json
from pathlib import Path

QUESTION = "What is the capital of France? Answer in one word."
RANK = 8
SEED = 0
REFERENCE_TOKENS = 16


def make_adapter(base: Path, target: Path, rank: int = RANK, seed: int = SEED) -> Path:
    """A PEFT adapter for the model at ``base`` saved in ``target`` (adapter_config.json, adapter_model.safetensors);
    another ``seed``, other weights."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    config = LoraConfig(
        r=rank, lora_alpha=24, target_modules=["q_proj", "v_proj"], init_lora_weights=False, task_type="CAUSAL_LM"
    )
    get_peft_model(model, config).save_pretrained(str(target))
    return target


def greedy_tokens(base: Path, adapter: Path | None, count: int = REFERENCE_TOKENS) -> list[int]:
    """The first ``count`` tokens transformers (+ PEFT with ``adapter``) generates greedily for ``QUESTION``."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    if adapter is not None:
        model = PeftModel.from_pretrained(model, adapter)
    model.eval()
    messages = [{"role": "user", "content": QUESTION}]
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True, return_tensors="pt")
    with torch.no_grad():
        output = model.generate(**prompt, max_new_tokens=count, do_sample=False)
    return [int(token) for token in output[0, prompt["input_ids"].shape[1] :]]


def reference(base: Path, adapter: Path, target: Path) -> dict[str, list[int]]:
    """PEFT's and the base model's greedy tokens, computed once and kept in ``target`` (a JSON file)."""
    if target.exists():
        cached: dict[str, list[int]] = json.loads(target.read_text())
        return cached
    tokens = {"adapter": greedy_tokens(base, adapter), "base": greedy_tokens(base, None)}
    target.write_text(json.dumps(tokens))
    return tokens
