"""vLLM's CPU levers, one at a time, measured offline on the config's chat model (``make levers``).

Each variant runs in a process of its own (``LD_PRELOAD`` and vLLM's CPU variables act at process start): vLLM's
offline ``LLM`` with the chat model's engine arguments from the config, in the dtype ``dtype: auto`` serves on this
machine, a warm-up, then decode speed at batch 1 (``BATCH_1_RUNS`` requests one after another) and at batch 16 (one
``generate`` of 16), ``TOKENS`` tokens each with ``ignore_eos``. Rounds alternate the order (baseline first, then
last), and the table gives each variant's median over rounds and its ratio to the baseline's.

    .venv/bin/python -m benchmarks.levers [--rounds 2] [--variants baseline,tcmalloc]
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from benchmarks.machine import cpu_summary
from benchmarks.servers import chat_model, model_dir
from engines.cpu_dtype import resolve_dtype
from engines.dtype_check import NOT_NUMERIC
from settings import ROOT, load_config

TOKENS = 128
BATCH_1_RUNS = 3
BATCH = 16
BOTH_CORES = {"VLLM_CPU_OMP_THREADS_BIND": "0,1", "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}  # this 2-core machine
PROMPT = "Write a long story about a lighthouse keeper."


def tcmalloc() -> str:
    """Debian's ``libtcmalloc-minimal4`` (``make install`` installs it where apt-get can)."""
    found = sorted(glob.glob("/usr/lib/*-linux-gnu/libtcmalloc_minimal.so.4"))
    return found[0] if found else ""


def iomp() -> str:
    """Intel's OpenMP runtime from PyPI's ``intel-openmp`` wheel, in the venv's ``lib``."""
    found = sorted(glob.glob(os.path.join(sys.prefix, "lib", "libiomp5.so")))
    return found[0] if found else ""


@dataclass(frozen=True)
class Variant:
    name: str
    env: dict[str, str] = field(default_factory=dict)
    engine: dict[str, Any] = field(default_factory=dict)
    needs: str = ""  # a library the variant preloads: skipped when it is missing


def variants() -> list[Variant]:
    return [
        Variant("baseline"),
        Variant("tcmalloc", {"LD_PRELOAD": tcmalloc()}, needs=tcmalloc()),
        Variant("iomp", {"LD_PRELOAD": iomp()}, needs=iomp()),
        Variant("tcmalloc+iomp", {"LD_PRELOAD": f"{tcmalloc()}:{iomp()}"}, needs=tcmalloc() and iomp()),
        Variant("both cores", BOTH_CORES),
        Variant("both cores + tcmalloc", {**BOTH_CORES, "LD_PRELOAD": tcmalloc()}, needs=tcmalloc()),
        Variant("nobind", {"VLLM_CPU_OMP_THREADS_BIND": "nobind"}),
        Variant("kv 1 GiB", {"VLLM_CPU_KVCACHE_SPACE": "1"}),
        Variant("kv 4 GiB", {"VLLM_CPU_KVCACHE_SPACE": "4"}),
        Variant("max_num_batched_tokens 512", engine={"max_num_batched_tokens": 512}),
        Variant("max_num_batched_tokens 8192", engine={"max_num_batched_tokens": 8192}),
    ]


def measure(model_path: str, engine_args: dict[str, Any]) -> dict[str, float]:
    """In this process: tokens per second at batch 1 and at batch ``BATCH``."""
    from vllm import LLM, SamplingParams

    llm = LLM(model=model_path, **engine_args)
    try:
        chat: list[Any] = [{"role": "user", "content": PROMPT}]
        params = SamplingParams(temperature=0, max_tokens=TOKENS, ignore_eos=True)
        llm.chat([chat], SamplingParams(max_tokens=16), use_tqdm=False)
        rates = {}
        for name, batch, runs in (("batch 1", 1, BATCH_1_RUNS), (f"batch {BATCH}", BATCH, 1)):
            started, tokens = time.perf_counter(), 0
            for _ in range(runs):
                outputs = llm.chat([chat] * batch, params, use_tqdm=False)
                tokens += sum(len(output.outputs[0].token_ids) for output in outputs)
            rates[name] = tokens / (time.perf_counter() - started)
        return rates
    finally:
        llm.llm_engine.engine_core.shutdown()


def run_apart(
    variant: Variant, model_path: str, engine_args: dict[str, Any], base_env: dict[str, str]
) -> dict[str, float]:
    """``measure`` in a child process with the variant's environment and engine arguments."""
    env = {**os.environ, **base_env, **variant.env, "TQDM_DISABLE": "1"}
    asked = json.dumps({"model": model_path, "engine": {**engine_args, **variant.engine}})
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.levers", "--child", asked], cwd=ROOT, env=env, capture_output=True, text=True
    )
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{variant.name}: {done.stderr.strip().splitlines()[-3:]}")
    rates: dict[str, float] = json.loads(lines[-1])
    return rates


def table(results: dict[str, list[dict[str, float]]]) -> list[str]:
    base = {metric: statistics.median(r[metric] for r in results["baseline"]) for metric in results["baseline"][0]}
    lines = ["| lever | " + " | ".join(f"{m} tok/s (x baseline)" for m in base) + " |", "|---" * (len(base) + 1) + "|"]
    for name, rounds in results.items():
        cells = []
        for metric in base:
            value = statistics.median(r[metric] for r in rounds)
            cells.append(
                f"{value:.1f} ({value / base[metric]:.2f}x, rounds {', '.join(f'{r[metric]:.1f}' for r in rounds)})"
            )
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default="configs/default.yaml")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--variants", default="", help="comma-separated names (default: all)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        asked = json.loads(args.child)
        print(json.dumps(measure(asked["model"], asked["engine"])), flush=True)
        sys.stderr.flush()
        os._exit(0)  # as engines.dtype_check: vLLM-cpu's threads can abort a normal exit after the work is done

    config = load_config(args.config)
    model = chat_model(config)
    path = model_dir(model)
    engine = {name: value for name, value in model.engine.items() if name not in NOT_NUMERIC}
    engine["dtype"] = resolve_dtype(model.id, path, model.engine, "generate", on_cpu=True)
    wanted = set(filter(None, args.variants.split(",")))
    chosen = [v for v in variants() if (not wanted or v.name in wanted or v.name == "baseline")]
    skipped = [v.name for v in chosen if v.env and "LD_PRELOAD" in v.env and not v.needs]
    chosen = [v for v in chosen if v.name not in skipped]
    results: dict[str, list[dict[str, float]]] = {v.name: [] for v in chosen}
    for round_number in range(args.rounds):
        order = chosen if round_number % 2 == 0 else list(reversed(chosen))
        for variant in order:
            rates = run_apart(variant, path, engine, dict(config.env))
            results[variant.name].append(rates)
            print(f"round {round_number + 1} {variant.name}: {rates}", file=sys.stderr, flush=True)
    print(f"{cpu_summary()}; {model.id}, dtype {engine['dtype']}, {TOKENS} tokens, ignore_eos")
    if skipped:
        print(f"skipped (library not installed): {', '.join(skipped)}")
    print("\n".join(table(results)))


if __name__ == "__main__":
    main()
