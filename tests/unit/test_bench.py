"""The benchmark's arithmetic and rendering (``benchmarks/``) on hand-made samples: no server, no engine."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from benchmarks import batch_report, batches, edge, layer, lora, report
from benchmarks.loadgen import LoadSpec, RequestSample, RunResult, percentile, summarize
from benchmarks.run import Plan
from benchmarks.servers import ManagedServer, bentoml_serve, chat_model, chat_only_config, engine_flags, running
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


def test_edge_prompts_are_deterministic_distinct_and_sized() -> None:
    assert edge.long_prompt(3, 50) == edge.long_prompt(3, 50)
    assert edge.long_prompt(3, 50)[:10] != edge.long_prompt(4, 50)[:10]  # distinct from the start: no shared prefix
    assert len(edge.long_prompt(3, 50).split()) == 50 + 5  # "Note 3:" and "Summarize the note."


def test_edge_window_gaps_are_those_overlapping_the_window() -> None:
    sample = RequestSample(latency=1.0, started=10.0, ttft=0.5, itls=[0.1, 0.1, 1.0, 0.1])
    times = edge.arrivals(sample)
    assert times == pytest.approx([10.5, 10.6, 10.7, 11.7, 11.8])
    assert edge.window_gaps(times, 10.65, 11.0) == pytest.approx([0.1, 1.0])  # ends inside, spans the end
    assert edge.window_gaps(times, 10.8, 10.9) == pytest.approx([1.0])  # one gap covers the whole window
    assert edge.arrivals(RequestSample(latency=1.0, error="refused")) == []


def test_edge_round_metrics_and_summary_table() -> None:
    stream = RequestSample(latency=2.0, started=0.0, ttft=0.1, itls=[0.02] * 98 + [0.5, 0.02])
    quick, slow = edge.Burst("B", stream, (0.5, 1.0)), edge.Burst("B", stream, (2.5, 2.6))
    rejected = edge.Burst("B, rejected", stream, (2.5, 2.6))
    bursts = [quick, slow, quick, rejected]
    figures = edge.Figures(one=[1.0, 3.0, 2.0], eight=[4.0, 5.0, 6.0], bursts=bursts, others_cpu={"A": 0.0})
    metrics = edge.round_metrics(figures)
    assert (metrics["A: 1 prompt, s"], metrics["A: 8 prompts, s"], metrics["A: 8 / 1"]) == (2.0, 5.0, 2.5)
    assert metrics["B: largest gap in window, ms"] == pytest.approx(20.0)  # median of the bursts' largest gaps
    assert metrics["B, rejected: largest gap in window, ms"] == pytest.approx(500.0)  # each kind on its own
    assert metrics["B, rejected: that gap minus the stream's ITL p50, ms"] == pytest.approx(480.0)
    assert metrics["B: window, s"] == pytest.approx(0.5)
    assert metrics["B: stream ITL p50, ms"] == pytest.approx(20.0)
    with pytest.raises(ValueError):
        edge.round_metrics(edge.Figures(one=[1.0], eight=[1.0]))
    halved = {**metrics, "A: 8 prompts, s": 2.5}
    table = edge.summary_table([{"before": metrics, "after": halved}, {"before": metrics, "after": halved}])
    assert "| A: 8 prompts, s | 5 | 2.5 | 0.50× | 5, 5 | 2.5, 2.5 |" in table
    assert "| others' CPU A, cores | 0 | 0 |  |" in "\n".join(table)  # no ratio for the machine's noise


class _Stub(ManagedServer):
    def __init__(self, name: str, events: list[str], fails: bool = False) -> None:
        super().__init__(name, ["true"], 0, "key", "m", "/readyz", Path("unused.log"))
        self.events, self.fails = events, fails

    def start(self, timeout: float = 900) -> float:
        self.events.append(f"start {self.name}")
        if self.fails:
            raise RuntimeError("exited early")
        return 0.0

    def stop(self, grace: float = 90) -> None:
        self.events.append(f"stop {self.name}")


def test_running_stops_every_started_server_last_first_also_on_failure() -> None:
    events: list[str] = []
    with running([lambda: _Stub("a", events), lambda: _Stub("b", events)]) as started:
        assert [server.name for server in started] == ["a", "b"]
    assert events == ["start a", "start b", "stop b", "stop a"]
    events.clear()
    with pytest.raises(RuntimeError), running([lambda: _Stub("a", events), lambda: _Stub("b", events, fails=True)]):
        pass
    assert events == ["start a", "start b", "stop b", "stop a"]


def test_bentoml_serve_runs_from_the_given_tree(tmp_path: Path) -> None:
    server = bentoml_serve("before", tmp_path, tmp_path / "configs" / "default.yaml", "m", "key", tmp_path)
    assert server.cwd == tmp_path
    assert server.command[-4:] == ["--working-dir", str(tmp_path), "--arg", f"config={tmp_path}/configs/default.yaml"]
    assert (server.log_path, server.env) == (tmp_path / "before.log", {"BENTO_OAI_API_KEYS": "key"})


def test_lora_benchmark_serves_four_adapters_on_the_chat_model_and_rates_them_per_round(tmp_path: Path) -> None:
    plain = chat_only_config("configs/default.yaml", tmp_path)
    adapters = [tmp_path / f"adapter-{n}" for n in range(4)]
    config = load_config(lora.lora_config(plain, adapters, tmp_path, "float32"))
    (model,) = config.models
    assert model.engine == {**load_config(plain).models[0].engine, **model.engine} and model.lora
    assert (
        model.engine["max_loras"] == 4
        and model.engine["dtype"] == "float32"
        and model.adapter_ids == ["lora-0", "lora-1", "lora-2", "lora-3"]
    )
    assert [adapter.source.path for adapter in model.adapters] == [str(path) for path in adapters]
    sample = RequestSample(latency=1.0, ttft=0.1, itls=[0.1], output_tokens=8, usage_reported=True)
    runs = {"base": [run(1.0, sample), run(2.0, sample)], "adapters": [run(2.0, sample), run(2.0, sample)]}
    runs["lora-base"] = [run(1.0, sample), run(1.0, sample)]
    table = lora.render(runs)
    assert "adapters / base: 0.750x (by round: 0.500, 1.000)" in table  # the median of the rounds' own ratios
    assert "adapters / lora-base: 0.500x" in table


def test_batch_benchmark_file_and_config(tmp_path: Path) -> None:
    rows = [json.loads(line) for line in batches.batch_file("m", 10, 64).decode().splitlines()]
    assert len({row["custom_id"] for row in rows}) == 10
    assert {row["url"] for row in rows} == {"/v1/chat/completions"}
    assert all(row["body"]["max_tokens"] == 64 and row["body"]["ignore_eos"] for row in rows)
    config = load_config(batches.setting_config("configs/default.yaml", batches.Setting.parse("48:4"), tmp_path))
    assert (config.batches.lines_in_flight, config.batches.reserve) == (48, 4)
    assert config.store.data_dir == str(tmp_path / "store")  # a store of its own, never the checkout's
    assert [model.task for model in config.models] == ["chat"]


def test_batch_benchmark_ratios_are_per_round() -> None:
    figures = batch_report.Figures(settings=["s"], prompt_tokens=[40])
    for offline, mine in ((100.0, 90.0), (50.0, 40.0)):
        figures.add("offline", batch_report.Measured(tokens=int(offline), seconds=1.0, others_cpu=0.0))
        figures.add("s", batch_report.Measured(int(mine), 1.0, 0.5, idle_ttft=[0.1, 0.1], loaded_ttft=[0.2, 0.15]))
    assert figures.throughput_ratios("s") == pytest.approx([0.9, 0.8])
    assert figures.ttft_ratios("s") == pytest.approx([1.75, 1.75])
    rendered = "\n".join(batch_report.table(figures) + batch_report.verdicts(figures))
    assert "| **0.85×**; 0.90, 0.80 |" in rendered
    assert "throughput 0.85× (meets >= 0.8); TTFT 1.75× (misses <= 1.5)" in rendered
