"""Decide ``dtype: auto`` for a config's chat models on this machine now, and record it (``engines.cpu_dtype``), so
that no server start waits for the check. Models from a local path or Hugging Face are decided at first start.

Usage: ``python scripts/decide_dtype.py [config]`` (default: ``configs/default.yaml``; ``make models`` runs it).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from settings import DEFAULT_CONFIG, load_config


def main() -> None:
    import bentoml

    from engines.cpu_dtype import resolve_dtype

    logging.basicConfig(level=logging.INFO, format="[decide-dtype] %(message)s")
    logging.getLogger("engines").setLevel(logging.INFO)
    config = load_config(sys.argv[1] if len(sys.argv) > 1 else DEFAULT_CONFIG)
    config.export_env()
    for model in config.models:
        if model.engine.get("dtype", "auto") == "auto" and model.source.bentoml:
            path = str(bentoml.models.get(model.source.bentoml).path)
            resolve_dtype(model.id, path, model.engine, model.runner, on_cpu=config.platform == "cpu")


if __name__ == "__main__":
    main()
