"""The benchmark's arithmetic and rendering (``benchmarks/``) on hand-made samples: no server, no engine."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from benchmarks import layer, report
from benchmarks.loadgen import LoadSpec, RequestSample, RunResult, percentile, summarize
from benchmarks.run import Plan
from benchmarks.servers import chat_model, chat_only_config, engine_flags
from settings import load_config
from tests.unit.fakes import CHAT_MODEL


def test_percentile_interpolates_and_is_nan_when_empty() -> None:
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile([0.0, 10.0], 99) == pytest.approx(9.9)
    assert math.isnan(percentile([], 50))


def run(wall: float, *samples: RequestSample) -> RunResult:
    return RunResult(LoadSpec(model="m", concurrency=2, requests=len(samples), max_tokens=4), list(samples), wall)


def test_summarize_pools_rounds_and_leaves_errors_out_of_rates() -> None:
    good = RequestSample(latency=1.0, ttft=0.1, itls=[0.2, 0.3, 0.4], output_tokens=4, usage_reported=True)
    failed = RequestSample(latency=0.5, error="APIConnectionError: refused")
    quiet, busy = run(2.0, good, good), run(2.0, good, failed)
    quiet.others_cpu, busy.others_cpu = 0.0, 1.0
    stats = summarize([quiet, busy])
    assert (stats.requests, stats.errors, stats.output_tokens) == (4, 1, 12)
    assert stats.output_tokens_per_s == 3.0  # 12 tokens over 4 s of summed wall time
    assert stats.requests_per_s == 0.75
    assert stats.ttft_p50 == 0.1
    assert stats.itl_p50 == 0.3
    assert stats.tokens_per_request == 4
    assert stats.usage_reported
    assert stats.first_error == "APIConnectionError: refused"
    assert stats.tokens_per_s_by_run == (4.0, 2.0)
    assert stats.others_cpu == 0.5  # weighted by wall time


def test_ratio_rows_and_missing_servers() -> None:
    fast = summarize([run(1.0, RequestSample(latency=1.0, ttft=0.1, output_tokens=8, usage_reported=True))])
    slow = summarize([run(2.0, RequestSample(latency=2.0, ttft=0.2, output_tokens=8))])
    lines = report.level_table({"ours": fast, "vllm": slow})
    assert lines[-2].startswith("| **ours / vLLM** | 2.00× |  | 2.00× | 0.50× |")
    assert lines[-1].startswith("| **ours / llama.cpp** | n/a |  | n/a | n/a |")
    assert "| llama.cpp server | not run |" in "\n".join(lines)
    assert "| 8.0* |" in lines[3]  # no usage chunk: tokens counted from chunks, flagged


def test_engine_args_become_vllm_flags() -> None:
    engine = {"dtype": "float32", "enforce_eager": True, "enable_log_requests": False, "max_model_len": 2048}
    engine["structured_outputs_config"] = {"backend": "xgrammar"}
    assert engine_flags(engine) == ["--dtype", "float32", "--enforce-eager", "--max-model-len", "2048"]


def test_ours_is_benchmarked_on_the_chat_model_alone(tmp_path: Path) -> None:
    full = load_config("configs/default.yaml")
    reduced = load_config(chat_only_config("configs/default.yaml", tmp_path))
    assert [model.task for model in full.models] == ["chat", "embed"]
    assert reduced.models == [chat_model(full)]  # same id, source and engine arguments
    assert (reduced.env, reduced.limits, reduced.auth) == (full.env, full.limits, full.auth)


async def test_layer_benchmark_streams_through_the_service_stack() -> None:
    """A tiny run of ``benchmarks.layer``, so it can't rot: it refuses a run that did not stream every token."""
    app = layer.streaming_app(tokens=8)
    body = b'{"model": "%s", "messages": [{"role": "user", "content": "hi"}], "stream": true}' % CHAT_MODEL.encode()
    assert await layer.stream_once(app, body) >= 8 + 1  # a chunk per token, then [DONE]
    assert 0 < await layer.measure(tokens=8, requests=2, repeats=1) < 10_000


def test_rounds_alternate_the_start_and_load_order() -> None:
    plan = Plan(servers=("ours", "vllm", "llama"))
    assert [plan.order(index) for index in range(3)] == [
        ("ours", "vllm", "llama"),
        ("llama", "vllm", "ours"),
        ("ours", "vllm", "llama"),
    ]
