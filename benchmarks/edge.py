"""Issue 13's two figures, measured before and after a change in one run, from two source trees.

- A, several prompts (item 9): the wall time of one non-streamed ``/v1/completions`` request with 1 prompt and
  with the 8 different ``loadgen.PROMPTS`` (same ``max_tokens``, ``ignore_eos``, temperature 0), in pairs whose
  order alternates. Submitted together, 8 prompts decode as one batch and should take little longer than 1.
- B, the event loop under long prompts (item 13): one running chat stream (``ignore_eos``) and, once it streams,
  ``burst`` chat requests with distinct ~1,500-token prompts sent at once (distinct, so prefix caching does not
  hide their templating, tokenizing or prefill). The window runs from their sending to the last one's first
  token; reported are the running stream's largest gap between tokens in that window and its ITL p50/p99.
  "B, rejected" sends the same burst with a ``max_tokens`` the context cannot hold: each request is templated and
  tokenized, then refused with a 400, so the engine does no prefill and what the stream feels is the API layer.

Each round starts each tree's server alone (``servers.bentoml_serve`` from the tree, on its
``configs/default.yaml``; two at once would not fit beside others' test servers), before first in even rounds and
after first in odd ones, measures A, B and "B, rejected" on it and stops it. Figures are medians over rounds; each
figure records the CPU other processes used meanwhile. The report goes to stdout, progress to stderr, every
sample to ``results/tmp/edge.json``.

Usage: ``python -m benchmarks.edge --before /tmp/wt_head --after /tmp/wt_after [--rounds 4] [--quick]``
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import itertools
import json
import logging
import random
import secrets
import statistics
import subprocess
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import openai

from benchmarks import machine, servers
from benchmarks.loadgen import PROMPTS, LoadSpec, RequestSample, one_request, percentile, run_load
from benchmarks.run import RESULTS, SETTLE
from settings import load_config
from tests.e2e.server import process_tree

logger = logging.getLogger("benchmarks")
SIDES = ("before", "after")
# Common words of one token each (with their leading space) in SmolLM2's tokenizer: n words, about n tokens.
WORDS = (
    "the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "near", "river", "bank", "while", "seven",
    "small", "birds", "sing", "songs", "in", "old", "green", "trees", "and", "many", "people", "walk", "past",
    "house", "on", "their", "way", "to", "work", "every", "day", "of", "week",
)  # fmt: skip


@dataclass(frozen=True)
class Plan:
    """What one run measures; token counts are per request."""

    rounds: int = 4
    pairs: int = 2  # figure A: (1-prompt, 8-prompt) request pairs per server per round
    completion_tokens: int = 64
    stream_tokens: int = 400  # figure B's running stream; it must outlast the window
    burst: int = 8
    burst_words: int = 1460  # ~1,500 prompt tokens with the chat template (max_model_len is 2048)
    burst_tokens: int = 16
    lead: float = 1.0  # seconds of steady streaming before the burst is sent
    bursts: int = 1  # figure B per server per round
    rejected_bursts: int = 4  # and "B, rejected"
    rejected_stream_tokens: int = 100
    rejected_tokens: int = 2048  # max_model_len: more than any burst prompt leaves, so a 400 after tokenizing


QUICK = Plan(rounds=1, pairs=1, stream_tokens=150, burst=2, burst_words=300, burst_tokens=4, rejected_bursts=1)


@dataclass(frozen=True)
class Burst:
    """Figure B once (``kind`` "B" or "B, rejected"): the running stream and the window in which the burst
    arrived (``perf_counter`` clock)."""

    kind: str
    stream: RequestSample
    window: tuple[float, float]

    def metrics(self) -> dict[str, float]:
        start, end = self.window
        largest = max(window_gaps(arrivals(self.stream), start, end))
        p50 = percentile(self.stream.itls, 50)
        return {
            f"{self.kind}: largest gap in window, ms": largest * 1000,
            f"{self.kind}: that gap minus the stream's ITL p50, ms": (largest - p50) * 1000,
            f"{self.kind}: stream ITL p99, ms": percentile(self.stream.itls, 99) * 1000,
            f"{self.kind}: stream ITL p50, ms": p50 * 1000,
            f"{self.kind}: window, s": end - start,
        }


@dataclass
class Figures:
    """One server's measurements in one round; times in seconds."""

    one: list[float] = field(default_factory=list)
    eight: list[float] = field(default_factory=list)
    bursts: list[Burst] = field(default_factory=list)
    others_cpu: dict[str, float] = field(default_factory=dict)  # by figure


def long_prompt(seed: int, words: int) -> str:
    """A deterministic text of ``words`` words, distinct from its first tokens on for each seed."""
    rng = random.Random(seed)
    body = " ".join(rng.choice(WORDS) for _ in range(words))
    return f"Note {seed}: {body}. Summarize the note."


def arrivals(sample: RequestSample) -> list[float]:
    """When each content chunk arrived, on the clock of ``sample.started``."""
    if sample.ttft is None:
        return []
    times = [sample.started + sample.ttft]
    for gap in sample.itls:
        times.append(times[-1] + gap)
    return times


def window_gaps(times: Sequence[float], start: float, end: float) -> list[float]:
    """The gaps between consecutive ``times`` that overlap the window ``[start, end]``."""
    return [later - earlier for earlier, later in itertools.pairwise(times) if later > start and earlier < end]


def round_metrics(figures: Figures) -> dict[str, float]:
    """One server's round reduced to the reported numbers: medians of its requests (A) and of its bursts (B)."""
    if not figures.bursts:
        raise ValueError("figure B was not measured")
    one, eight = statistics.median(figures.one), statistics.median(figures.eight)
    metrics = {"A: 1 prompt, s": one, "A: 8 prompts, s": eight, "A: 8 / 1": eight / one}
    by_name: dict[str, list[float]] = {}
    for burst in figures.bursts:
        for name, value in burst.metrics().items():
            by_name.setdefault(name, []).append(value)
    metrics.update({name: statistics.median(values) for name, values in by_name.items()})
    metrics.update({f"others' CPU {name}, cores": cores for name, cores in figures.others_cpu.items()})
    return metrics


def summary_table(rounds: Sequence[dict[str, dict[str, float]]]) -> list[str]:
    """Markdown from each round's ``round_metrics`` by side: every metric's median over rounds before and
    after, their ratio and the rounds' values."""
    lines = ["| metric | before | after | after / before | rounds before | rounds after |", "|---|---|---|---|---|---|"]
    for name in rounds[0]["before"]:
        values = {side: [by_side[side][name] for by_side in rounds] for side in SIDES}
        before, after = (statistics.median(values[side]) for side in SIDES)
        ratio = f"{after / before:.2f}×" if before and "CPU" not in name else ""
        spread = [", ".join(f"{value:.3g}" for value in values[side]) for side in SIDES]
        lines.append(f"| {name} | {before:.3g} | {after:.3g} | {ratio} | {spread[0]} | {spread[1]} |")
    return lines


async def completion_wall(client: openai.AsyncOpenAI, model: str, prompts: list[str], max_tokens: int) -> float:
    """One non-streamed completion of ``prompts``; refuses a response that did not generate every token."""
    started = time.perf_counter()
    response = await client.completions.create(
        model=model, prompt=prompts, max_tokens=max_tokens, temperature=0, extra_body={"ignore_eos": True}
    )
    wall = time.perf_counter() - started
    usage = response.usage
    if len(response.choices) != len(prompts) or usage is None or usage.completion_tokens != max_tokens * len(prompts):
        raise RuntimeError(f"{len(response.choices)} choices, usage {usage}: not the requested completion")
    return wall


async def figure_a(client: openai.AsyncOpenAI, server: servers.ManagedServer, plan: Plan, into: Figures) -> None:
    await asyncio.sleep(SETTLE)
    with machine.ForeignCpu(process_tree(server.process)) as others:
        for pair in range(plan.pairs):
            for count in (1, 8) if pair % 2 == 0 else (8, 1):
                wall = await completion_wall(client, server.model, list(PROMPTS[:count]), plan.completion_tokens)
                (into.one if count == 1 else into.eight).append(wall)
    into.others_cpu["A"] = others.cores


async def figure_b(client: openai.AsyncOpenAI, model: str, plan: Plan, seed: int, rejected: bool) -> Burst:
    """The running stream, and the burst sent ``plan.lead`` seconds after its first token; ``rejected``: with a
    ``max_tokens`` that makes every burst request a 400 once its prompt is tokenized."""
    await asyncio.sleep(SETTLE)
    stream_tokens = plan.rejected_stream_tokens if rejected else plan.stream_tokens
    stream_spec = LoadSpec(model, concurrency=1, requests=1, max_tokens=stream_tokens)
    prompts = [long_prompt(seed + i, plan.burst_words) for i in range(plan.burst)]
    tokens = plan.rejected_tokens if rejected else plan.burst_tokens
    burst_spec = LoadSpec(model, plan.burst, plan.burst, tokens, prompts=prompts)
    streaming = asyncio.Event()
    stream_task = asyncio.create_task(one_request(client, stream_spec, PROMPTS[0], streaming))
    await streaming.wait()
    await asyncio.sleep(plan.lead)
    sent = time.perf_counter()
    burst = await run_load(client, burst_spec)
    stream = await stream_task
    outcomes = {_outcome(sample) for sample in burst.samples}
    if stream.error is not None or outcomes != {"too long" if rejected else "ok"}:
        raise RuntimeError(f"figure B: stream {stream.error or 'ok'}, burst {sorted(outcomes)}")
    end = max(sample.started + (sample.latency if rejected else sample.ttft or 0.0) for sample in burst.samples)
    if not arrivals(stream) or arrivals(stream)[-1] <= end:
        raise RuntimeError("the running stream ended inside the window: raise Plan.stream_tokens")
    return Burst("B, rejected" if rejected else "B", stream, (sent, end))


async def warm_up(client: openai.AsyncOpenAI, server: servers.ManagedServer, plan: Plan, seed: int) -> int:
    """First-request costs on both paths; returns the prompt tokens of a burst-sized chat prompt."""
    await completion_wall(client, server.model, list(PROMPTS), 4)
    await one_request(client, LoadSpec(server.model, concurrency=1, requests=1, max_tokens=8), PROMPTS[1])
    response = await client.chat.completions.create(
        model=server.model,
        messages=[{"role": "user", "content": long_prompt(seed, plan.burst_words)}],
        max_tokens=1,
    )
    return response.usage.prompt_tokens if response.usage else 0


async def measure(index: int, server: servers.ManagedServer, plan: Plan) -> Figures:
    """Round ``index`` on one started server: warm-up, figure A, then figure B ``plan.bursts`` times."""
    client = openai.AsyncOpenAI(base_url=f"{server.base_url}/v1", api_key=server.api_key, max_retries=0)
    figures = Figures()
    try:
        tokens = await warm_up(client, server, plan, seed=-1 - index)
        logger.info("round %d %s: warm; a burst prompt is %d tokens", index + 1, server.name, tokens)
        await figure_a(client, server, plan, figures)
        kinds = [False] * plan.bursts + [True] * plan.rejected_bursts
        with machine.ForeignCpu(process_tree(server.process)) as others:
            for repeat, rejected in enumerate(kinds):
                seed = (index * len(kinds) + repeat) * plan.burst  # distinct prompts, the same on both sides
                figures.bursts.append(await figure_b(client, server.model, plan, seed, rejected))
        figures.others_cpu["B"] = others.cores
    finally:
        await client.close()
    logger.info("round %d %s: %s", index + 1, server.name, _brief(round_metrics(figures)))
    return figures


def bench(trees: dict[str, Path], plan: Plan, log_dir: Path) -> list[dict[str, Figures]]:
    """Every round: each side's server started alone (before first in even rounds), measured and stopped."""
    key = f"sk-bench-{secrets.token_hex(12)}"
    model = servers.chat_model(load_config(trees["before"] / "configs" / "default.yaml")).id

    def maker(side: str) -> servers.ManagedServer:
        tree = trees[side]
        return servers.bentoml_serve(side, tree, tree / "configs" / "default.yaml", model, key, log_dir)

    rounds = []
    for index in range(plan.rounds):
        by_side = {}
        for side in SIDES if index % 2 == 0 else SIDES[::-1]:
            with servers.running([functools.partial(maker, side)]) as (server,):
                by_side[side] = asyncio.run(measure(index, server, plan))
        rounds.append(by_side)
    return rounds


def _outcome(sample: RequestSample) -> str:
    """ "ok", "too long" (the 400 that counted the prompt's tokens first) or the error's type."""
    if sample.error is None:
        return "ok"
    return "too long" if "maximum context length" in sample.error else sample.error.split(":")[0]


def _brief(metrics: dict[str, float]) -> str:
    return ", ".join(f"{name} {value:.3g}" for name, value in metrics.items())


def describe(trees: dict[str, Path]) -> list[str]:
    lines = [f"- machine: {machine.cpu_summary()}"]
    for side, tree in trees.items():
        head = subprocess.run(["git", "log", "-1", "--format=%h %s"], cwd=tree, capture_output=True, text=True)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=tree, capture_output=True, text=True)
        state = " (uncommitted changes)" if dirty.stdout.strip() else ""
        lines.append(f"- {side}: {tree}, {head.stdout.strip()[:80]}{state}")
    return lines


def save_raw(plan: Plan, rounds: list[dict[str, Figures]]) -> Path:
    path = RESULTS / "tmp" / "edge.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    by_round = [{side: asdict(figures) for side, figures in by_side.items()} for by_side in rounds]
    path.write_text(json.dumps({"plan": asdict(plan), "rounds": by_round}))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, required=True, help="source tree of the 'before' commit")
    parser.add_argument("--after", type=Path, required=True, help="source tree of the 'after' commit")
    parser.add_argument("--rounds", type=int, help=f"rounds (default {Plan.rounds})")
    parser.add_argument("--quick", action="store_true", help="one tiny round, to check that it works")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    for name in ("httpx", "httpx2"):
        logging.getLogger(name).setLevel(logging.WARNING)
    plan = QUICK if args.quick else Plan()
    if args.rounds:
        plan = Plan(**{**asdict(plan), "rounds": args.rounds})
    trees = {"before": args.before.resolve(), "after": args.after.resolve()}
    started = time.monotonic()
    rounds = bench(trees, plan, RESULTS / "tmp" / "logs")
    metrics = [{side: round_metrics(by_side[side]) for side in SIDES} for by_side in rounds]
    raw = save_raw(plan, rounds)
    print("\n".join([*describe(trees), f"- plan: {plan}", "", *summary_table(metrics)]))
    print(f"\n{plan.rounds} round(s) in {(time.monotonic() - started) / 60:.0f} min; samples in {raw}")


if __name__ == "__main__":
    main()
