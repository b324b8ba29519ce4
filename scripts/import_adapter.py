"""Import a LoRA adapter from a PEFT directory into the BentoML model store (``make models ADAPTER=dir
ADAPTER_NAME=name``), so that a config can serve it (``adapters: [{id: ..., source: {bentoml: name}}]``),
``/v1/load_lora_adapter`` can load it by its tag, and ``bentoml build`` packages it with the base.

The directory must hold what the service serves: a PEFT LoRA ``adapter_config.json`` and
``adapter_model.safetensors`` (checked as the service checks them, ``engines.lora_files``; the shapes are checked
against the base when the service loads it). Every file of the directory is copied. The model records the files'
SHA-256, so importing the same files again is a no-op, and changed files become a new version (which ``name``
alone then names).

Usage: ``python scripts/import_adapter.py DIR [--name NAME]`` (default name: the directory's).
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
from pathlib import Path

import bentoml
from bentoml.exceptions import NotFound

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engines.lora_files import WEIGHTS, read_config, shapes
from openai_routes.core.engine import EngineInputError

LABELS = {"kind": "lora-adapter"}


def say(message: str) -> None:
    print(f"[import-adapter] {message}", flush=True)


def digest(directory: Path) -> str:
    """SHA-256 over the directory's files, names and contents, in name order."""
    total = hashlib.sha256()
    for file in sorted(path for path in directory.rglob("*") if path.is_file()):
        total.update(file.relative_to(directory).as_posix().encode() + b"\0")
        total.update(hashlib.sha256(file.read_bytes()).digest())
    return total.hexdigest()


def check(directory: Path) -> dict[str, object]:
    """The adapter's PEFT config, once its config and weights read as the service reads them (else SystemExit)."""
    if not directory.is_dir():
        raise SystemExit(f"[import-adapter] {directory} is not a directory")
    try:
        config = read_config(directory)
        if not (directory / WEIGHTS).is_file():
            raise EngineInputError(f"The adapter has no {WEIGHTS}.", param="lora_path")
        shapes(directory / WEIGHTS)
    except EngineInputError as exc:
        raise SystemExit(f"[import-adapter] {directory}: {exc}") from None
    return config


def import_adapter(directory: Path, name: str) -> bentoml.Tag:
    """``directory`` in the store as ``name`` (a new version unless the latest already holds the same files)."""
    config = check(directory)
    sha256 = digest(directory)
    try:
        latest = bentoml.models.get(name)
    except NotFound:
        latest = None
    if latest is not None and latest.info.metadata.get("sha256") == sha256:
        say(f"{name}: already in the store as {latest.tag}")
        return latest.tag
    metadata = {
        "sha256": sha256,
        "base_model": str(config.get("base_model_name_or_path")),
        "rank": str(config.get("r")),
        "imported_from": str(directory.resolve()),
    }
    with bentoml.models.create(name, labels=LABELS, metadata=metadata) as model:
        shutil.copytree(directory, model.path, dirs_exist_ok=True)
    say(f"{name}: saved as {model.tag} (serve it with source: {{bentoml: {name}}})")
    return model.tag


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path, help="a PEFT LoRA adapter directory")
    parser.add_argument("--name", help="the model's name in the store (default: the directory's name)")
    args = parser.parse_args()
    name = args.name or args.directory.resolve().name
    try:
        bentoml.Tag.from_taglike(name)
    except ValueError as exc:
        parser.error(f"not a valid BentoML model name {name!r}: {exc}")
    import_adapter(args.directory, name)


if __name__ == "__main__":
    main()
