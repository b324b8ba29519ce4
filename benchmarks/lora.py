"""LoRA adapters against the base model alone (issue 27, item 6): streamed output tokens/s at concurrency 16, with
requests spread over 4 adapters, against the same load on the base model.

Two servers of this tree are up at once (``bentoml serve``, the config's chat model alone, as ``make bench``'s
``ours``): ``plain`` (the config as it is) and ``lora`` (the same plus ``enable_lora``, ``max_loras`` 4 and four
PEFT adapters made by ``tests.lora_adapter``: rank 8 on ``q_proj``/``v_proj``, seeds 0 to 3). Every round runs
three closed loops of ``loadgen`` (its prompts, ``max_tokens``, ``ignore_eos``, temperature 0): ``base`` (the base
model on the plain server), ``adapters`` (request ``i`` names adapter ``i mod 4``, on the lora server) and
``lora-base`` (the base model on the lora server: what enabling LoRA costs by itself). The order of the three
alternates from round to round, so the machine's drift falls on all alike; each ratio is the median of the rounds'
own ratios (each measured seconds apart), and the goal is adapters/base >= 0.7.

    .venv/bin/python -m benchmarks.lora [--rounds 3] [--concurrency 16] [--requests 64] [--max-tokens 64]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import itertools
import logging
import secrets
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

import openai
import yaml

from benchmarks import machine
from benchmarks import servers as peers
from benchmarks.loadgen import LoadSpec, RequestSample, RunResult, Stats, one_request, summarize
from engines.cpu_dtype import resolve_dtype
from settings import ROOT, load_config
from tests.e2e.server import process_tree

logger = logging.getLogger("benchmarks")
OUT = Path(__file__).resolve().parent / "results" / "tmp" / "lora"
ADAPTERS = 4
RANK = 8
LOADS = ("base", "adapters", "lora-base")
SETTLE = 2.0  # seconds between loops: vLLM's engine core spins for a second after its last step


def make_adapters(base: Path, directory: Path) -> list[Path]:
    """Four PEFT adapters of the base model (``tests.lora_adapter``), other weights each (kept across runs)."""
    from tests.lora_adapter import make_adapter

    made = []
    for seed in range(ADAPTERS):
        target = directory / f"adapter-{seed}"
        made.append(target if (target / "adapter_config.json").is_file() else make_adapter(base, target, RANK, seed))
    return made


def lora_config(plain: Path, adapters: Sequence[Path], directory: Path, dtype: str) -> Path:
    """The plain config with LoRA on its chat model, the adapters as ``lora-0`` ... ``lora-3``, and the ``dtype`` the
    plain server runs (``auto`` would decide again for these engine arguments)."""
    raw = yaml.safe_load(plain.read_text())
    model = raw["models"][0]
    lora = {"enable_lora": True, "max_lora_rank": RANK, "max_loras": len(adapters), "dtype": dtype}
    model["engine"] = {**model["engine"], **lora}
    model["adapters"] = [{"id": f"lora-{n}", "source": {"path": str(path)}} for n, path in enumerate(adapters)]
    path = directory / "lora.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


async def closed_loop(client: openai.AsyncOpenAI, spec: LoadSpec, models: Sequence[str]) -> RunResult:
    """``loadgen.run_load`` where request ``i`` names ``models[i % len(models)]``."""
    prompts = itertools.cycle(spec.prompts)
    sent = itertools.count()
    samples: list[RequestSample] = []

    async def worker() -> None:
        while (number := next(sent)) < spec.requests:
            model_spec = dataclasses.replace(spec, model=models[number % len(models)])
            samples.append(await one_request(client, model_spec, next(prompts)))

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(min(spec.concurrency, spec.requests))))
    return RunResult(spec=spec, samples=samples, wall=time.perf_counter() - started)


async def measure(
    plain: peers.ManagedServer, lora: peers.ManagedServer, base: str, spec: LoadSpec, rounds: int
) -> dict[str, list[RunResult]]:
    targets = {
        "base": (plain, [base]),
        "adapters": (lora, [f"lora-{n}" for n in range(ADAPTERS)]),
        "lora-base": (lora, [base]),
    }
    clients = {
        server.name: openai.AsyncOpenAI(
            base_url=f"{server.base_url}/v1", api_key=server.api_key, max_retries=0, timeout=900
        )
        for server in (plain, lora)
    }
    warm = dataclasses.replace(spec, concurrency=4, requests=8, max_tokens=16)
    for server, models in targets.values():  # first-request costs, each adapter's first load into the engine
        await closed_loop(clients[server.name], warm, models)
    runs: dict[str, list[RunResult]] = {name: [] for name in LOADS}
    everything = [*process_tree(plain.process), *process_tree(lora.process)]
    for index in range(rounds):
        for name in LOADS if index % 2 == 0 else LOADS[::-1]:
            server, models = targets[name]
            await asyncio.sleep(SETTLE)
            with machine.ForeignCpu(everything) as others:
                result = await closed_loop(clients[server.name], spec, models)
            result.others_cpu = others.cores
            stats = summarize([result])
            logger.info(
                "round %d %s: %.1f tok/s, TTFT p50 %.0f ms, ITL p50 %.1f ms, %d errors, others' CPU %.2f",
                index + 1, name, stats.output_tokens_per_s, stats.ttft_p50 * 1000, stats.itl_p50 * 1000,
                stats.errors, others.cores,
            )  # fmt: skip
            runs[name].append(result)
    for client in clients.values():
        await client.close()
    return runs


def render(runs: dict[str, list[RunResult]]) -> str:
    stats: dict[str, Stats] = {name: summarize(results) for name, results in runs.items()}
    rates = {name: [summarize([run]).output_tokens_per_s for run in results] for name, results in runs.items()}
    lines = [
        "| load | tok/s (median of rounds) | by round | TTFT p50 ms | ITL p50 ms | tokens/request | errors "
        "| others' CPU, cores |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name in LOADS:
        s = stats[name]
        lines.append(
            f"| {name} | {s.output_tokens_per_s:.1f} | {', '.join(f'{r:.1f}' for r in rates[name])} "
            f"| {s.ttft_p50 * 1000:.0f} | {s.itl_p50 * 1000:.1f} | {s.tokens_per_request:.0f} | {s.errors} "
            f"| {s.others_cpu:.2f} |"
        )
    lines.append("")
    for over in ("base", "lora-base"):
        ratios = [mine / theirs for mine, theirs in zip(rates["adapters"], rates[over], strict=True)]
        lines.append(
            f"adapters / {over}: {statistics.median(ratios):.3f}x (by round: {', '.join(f'{r:.3f}' for r in ratios)})"
        )
    lora_base = [mine / theirs for mine, theirs in zip(rates["lora-base"], rates["base"], strict=True)]
    lines.append(f"lora-base / base: {statistics.median(lora_base):.3f}x (what enable_lora costs the base by itself)")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/default.yaml", help="its chat model is the base")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--requests", type=int, default=64, help="requests per loop")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--out", type=Path, default=OUT, help="adapters, configs and server logs")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request otherwise
    config = load_config(args.config)
    base = peers.chat_model(config)
    args.out.mkdir(parents=True, exist_ok=True)
    adapters = make_adapters(Path(peers.model_dir(base)), args.out / "adapters")
    plain_config = peers.chat_only_config(args.config, args.out)
    dtype = resolve_dtype(base.id, peers.model_dir(base), base.engine, base.runner, on_cpu=config.platform == "cpu")
    key = f"sk-bench-{secrets.token_hex(12)}"
    makers = [
        lambda: peers.bentoml_serve("plain", ROOT, plain_config, base.id, key, args.out),
        lambda: peers.bentoml_serve(
            "lora", ROOT, lora_config(plain_config, adapters, args.out, dtype), base.id, key, args.out
        ),
    ]
    spec = LoadSpec(model=base.id, concurrency=args.concurrency, requests=args.requests, max_tokens=args.max_tokens)
    with peers.running(makers) as (plain, lora):
        runs = asyncio.run(measure(plain, lora, base.id, spec, args.rounds))
    print(f"\n{machine.cpu_summary()}; c={args.concurrency}, {args.requests} requests x {args.max_tokens} tokens "
          f"per loop, {args.rounds} rounds, dtype {dtype}\n")  # fmt: skip
    print(render(runs))


if __name__ == "__main__":
    main()
