"""``make bench``: ours vs vLLM's own OpenAI server vs llama.cpp's server, on one model and this machine.

Each round starts every server, runs every concurrency level as a block per server (only one under load at a
time: the machine has 2 cores), then the tiny-request overhead run, and stops them. The order alternates from
round to round (ours, vllm, llama, then llama, vllm, ours, ...), for starting as for loading: blocks of the
servers being compared are seconds apart, so the machine's drift (it has bursts tens of seconds long) cancels
out, and so does the place in the start order (the server started first ran ~2 % slower at concurrency 1 for
as long as it was up, whichever it was; see ``README.md``). Each level's requests are split across the rounds;
rates are the median over rounds, latency percentiles pooled. Writes ``<out>.md`` and ``<out>.png``.

Usage: ``python -m benchmarks.run [--quick] [--servers ours,vllm] [--concurrency 1,4,16,64] ...``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import openai

from benchmarks import machine, report
from benchmarks import servers as peers
from benchmarks.loadgen import PROMPTS, LoadSpec, RunResult, Stats, run_load, summarize
from settings import ServiceConfig, load_config
from tests.e2e.server import process_tree

logger = logging.getLogger("benchmarks")
RESULTS = Path(__file__).resolve().parent / "results"
# Before each block: vLLM's engine core keeps spinning for a second after its last step (ours and vLLM's alike),
# which would otherwise land on the next block, of another server.
SETTLE = 2.0


@dataclass(frozen=True)
class Plan:
    """What to run: levels, requests per level (summed over rounds), token budget, overhead run."""

    levels: tuple[int, ...] = (1, 4, 16, 64)
    min_requests: int = 48
    per_worker: int = 8  # requests per level >= per_worker x concurrency, so the ramp-down tail stays small
    max_tokens: int = 64
    rounds: int = 4
    overhead_concurrency: int = 64
    overhead_requests: int = 512
    servers: tuple[str, ...] = ("ours", "vllm", "llama")

    def requests(self, level: int) -> int:
        """Per round."""
        return max(self.min_requests, self.per_worker * level) // self.rounds

    def order(self, index: int) -> tuple[str, ...]:
        """Round ``index``'s order of servers, to start and to load: as given, then reversed, and so on."""
        return self.servers if index % 2 == 0 else tuple(reversed(self.servers))


QUICK = Plan(min_requests=8, per_worker=2, max_tokens=32, rounds=1, overhead_requests=64)


@dataclass
class Collected:
    """Every run so far, by server and level."""

    runs: dict[str, dict[int, list[RunResult]]] = field(default_factory=dict)
    overhead: dict[str, list[RunResult]] = field(default_factory=dict)

    def add(self, server: str, level: int, result: RunResult) -> None:
        self.runs.setdefault(server, {}).setdefault(level, []).append(result)

    def stats(self) -> dict[str, dict[int, Stats]]:
        return {key: {level: summarize(runs) for level, runs in by.items()} for key, by in self.runs.items()}

    def foreign_cpu(self) -> list[tuple[str, float]]:
        """Average cores other processes used while each server was measured (wall-weighted)."""
        averages = []
        for name, by in self.runs.items():
            runs = [run for level in by.values() for run in level] + self.overhead.get(name, [])
            wall = sum(run.wall for run in runs)
            averages.append((name, sum(run.others_cpu * run.wall for run in runs) / wall if wall else 0.0))
        return averages


async def measured(client: openai.AsyncOpenAI, spec: LoadSpec, server: peers.ManagedServer) -> RunResult:
    """One run, with the CPU that processes other than the server and this one used meanwhile."""
    await asyncio.sleep(SETTLE)
    with machine.ForeignCpu(process_tree(server.process)) as others:
        result = await run_load(client, spec)
    result.others_cpu = others.cores
    return result


async def run_round(index: int, servers: list[peers.ManagedServer], plan: Plan, collected: Collected) -> None:
    """One round on the started ``servers``, in the round's order, into ``collected``."""
    clients = {
        server.name: openai.AsyncOpenAI(
            base_url=f"{server.base_url}/v1", api_key=server.api_key, max_retries=0, timeout=900
        )
        for server in servers
    }
    for server in servers:  # warm-up: first-request costs, caches, lazy imports
        await run_load(clients[server.name], LoadSpec(model=server.model, concurrency=4, requests=8, max_tokens=16))
    for level in plan.levels:
        for server in servers:
            spec = LoadSpec(server.model, concurrency=level, requests=plan.requests(level), max_tokens=plan.max_tokens)
            result = await measured(clients[server.name], spec, server)
            stats = summarize([result])
            logger.info(
                "round %d %s c=%d: %.1f tok/s, TTFT p50 %.0f ms, %d errors, others' CPU %.2f",
                index + 1, server.name, level, stats.output_tokens_per_s, stats.ttft_p50 * 1000, stats.errors,
                result.others_cpu,
            )  # fmt: skip
            collected.add(server.name, level, result)
    for server in servers:
        spec = LoadSpec(
            server.model,
            concurrency=plan.overhead_concurrency,
            requests=plan.overhead_requests // plan.rounds,
            max_tokens=1,
        )
        result = await measured(clients[server.name], spec, server)
        logger.info("round %d %s overhead: %.1f req/s", index + 1, server.name, summarize([result]).requests_per_s)
        collected.overhead.setdefault(server.name, []).append(result)
    for client in clients.values():
        await client.close()


def bench(makers: dict[str, Callable[[], peers.ManagedServer]], plan: Plan) -> Collected:
    """Every round: start the servers one after another in the round's order, measure them, stop them."""
    collected = Collected()
    for index in range(plan.rounds):
        logger.info("round %d", index + 1)
        with peers.running(makers[name] for name in plan.order(index)) as servers:
            asyncio.run(run_round(index, servers, plan, collected))
    return collected


def factories(
    args: argparse.Namespace, config: ServiceConfig, log_dir: Path
) -> dict[str, Callable[[], peers.ManagedServer]]:
    key = f"sk-bench-{secrets.token_hex(12)}"
    return {
        "ours": lambda: peers.ours(args.config, config, key, log_dir),
        "vllm": lambda: peers.vllm(config, key, log_dir),
        "llama": lambda: peers.llama(config, args.llama_python, key, log_dir),
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one short round (a few minutes), to tmp/")
    parser.add_argument("--config", default="configs/default.yaml", help="ours' config; its chat model is used")
    parser.add_argument("--llama-python", default=".venv-bench/bin/python", help="python with llama-cpp-python")
    parser.add_argument("--servers", help="comma-separated subset of ours,vllm,llama")
    parser.add_argument("--concurrency", help="comma-separated levels (default 1,4,16,64)")
    parser.add_argument("--rounds", type=int, help="rounds to alternate servers over (default 4)")
    parser.add_argument("--max-tokens", type=int, help="output tokens per request (default 64)")
    parser.add_argument("--out", type=Path, help="output path without suffix (default results/latest)")
    return parser.parse_args()


def plan_from(args: argparse.Namespace) -> Plan:
    plan = QUICK if args.quick else Plan()
    if args.servers:
        plan = replace(plan, servers=tuple(args.servers.split(",")))
    if args.concurrency:
        plan = replace(plan, levels=tuple(int(level) for level in args.concurrency.split(",")))
    if args.rounds:
        plan = replace(plan, rounds=args.rounds)
    if args.max_tokens:
        plan = replace(plan, max_tokens=args.max_tokens)
    unknown = set(plan.servers) - set(report.SERVERS)
    if unknown:
        raise SystemExit(f"unknown server(s): {', '.join(sorted(unknown))}")
    return plan


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    for name in ("httpx", "httpx2"):  # not a line per request (the openai SDK's client logs as httpx2)
        logging.getLogger(name).setLevel(logging.WARNING)
    args = parse_args()
    plan = plan_from(args)
    out: Path = args.out or (RESULTS / "tmp" / "quick" if args.quick else RESULTS / "latest")
    config = load_config(args.config)
    make = factories(args, config, RESULTS / "tmp" / "logs")
    started = time.monotonic()
    collected = bench(make, plan)
    minutes = (time.monotonic() - started) / 60
    preamble = machine.preamble(plan_lines(plan, args, config), args.llama_python, out.with_suffix(".png").name)
    notes = machine.noise_notes(collected.foreign_cpu())
    overhead = {key: summarize(runs) for key, runs in collected.overhead.items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    save_raw(collected, RESULTS / "tmp" / out.with_suffix(".json").name)
    markdown = report.render_markdown(collected.stats(), plan.levels, overhead, preamble, notes)
    out.with_suffix(".md").write_text(markdown + f"\nTotal run time: {minutes:.0f} min.\n")
    title = f"{peers.chat_model(config).id}, max_tokens={plan.max_tokens}, {machine.cpu_summary()}"
    report.plot(collected.stats(), plan.levels, out.with_suffix(".png"), title)
    logger.info("wrote %s and %s (%.0f min)", out.with_suffix(".md"), out.with_suffix(".png"), minutes)


def save_raw(collected: Collected, path: Path) -> None:
    """Every sample, for a second look (``tmp/`` is not committed)."""
    raw = {
        "runs": {
            key: {level: [asdict(run) for run in runs] for level, runs in by.items()}
            for key, by in collected.runs.items()
        },
        "overhead": {key: [asdict(run) for run in runs] for key, runs in collected.overhead.items()},
        "foreign_cpu": collected.foreign_cpu(),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(raw))


def plan_lines(plan: Plan, args: argparse.Namespace, config: ServiceConfig) -> list[str]:
    chat = peers.chat_model(config)
    requests = ", ".join(f"{level}: {plan.requests(level) * plan.rounds}" for level in plan.levels)
    return [
        f"- Model: `{chat.id}`; ours and vLLM serve the converted HF directory (float32), llama.cpp the "
        f"Q4_1 GGUF it was converted from (`{peers.GGUF_FILE}`).",
        f"- Ours: `bentoml serve service:BentoOAI` with `{args.config}` reduced to its chat model (the same "
        "model set as vLLM's server; an idle embedding engine beside it costs about 1.5 % at concurrency 1 on "
        "2 cores, see `benchmarks/README.md`). vLLM: `python -m vllm.entrypoints.openai.api_server` with the "
        "same engine arguments "
        f"(`{' '.join(peers.engine_flags(chat.engine))}`) and environment ({_env(config)}). llama.cpp: "
        f"`python -m llama_cpp.server {' '.join(peers.LLAMA_FLAGS)}` (queue, don't interrupt; one compute "
        "thread like vLLM's CPU engine; no debug printout), n_ctx from max_model_len, chat template from the GGUF.",
        f"- Load: closed loop, streaming chat completions with `stream_options.include_usage`, temperature 0, "
        f"`max_tokens={plan.max_tokens}`, `ignore_eos` (llama.cpp ignores it), {len(PROMPTS)} fixed "
        f"prompts; requests per level ({requests}); a warm-up of 8 requests per server start.",
        f"- {plan.rounds} round(s); each starts every server (all up at once, one under load at a time), runs "
        f"every level as one block per server and stops them, in an order alternating from round to round "
        f"({' → '.join(plan.servers)}, then reversed, ...) for starting as for loading: a server's blocks and "
        "its peers' are seconds apart, so the machine's drift cancels out, and so does the place in the start "
        "order; each level's requests split evenly across rounds. Rates are the median over rounds of each "
        "block's rate (over its wall time, first send to last completion); latency percentiles are over the "
        "requests of all rounds.",
        "- The official `openai` SDK (AsyncOpenAI, `max_retries=0`) drives the load from one process on the "
        "same 2 cores; TTFT is to the first chunk with content, ITL the gaps between content chunks.",
    ]


def _env(config: ServiceConfig) -> str:
    return ", ".join(f"`{name}={value}`" for name, value in config.env.items()) or "none"


if __name__ == "__main__":
    main()
