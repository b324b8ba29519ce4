"""``dtype: auto`` on CPU (``engines.cpu_dtype``, ``engines.dtype_check``): the agreement figures, the flags that
mean native bf16, and a decision made once per machine and model, then read from its record. The check's vLLM runs
are replaced here; ``scripts/decide_dtype.py`` runs the real check (``make models``), and the e2e servers serve with
what it recorded."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from engines import cpu_dtype, dtype_check
from engines.dtype_check import TOKENS, Agreement, Answers, agreement

AMX = "processor\t: 0\nmodel name\t: Intel(R) Xeon(R)\nflags\t\t: fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"
AVX2 = "processor\t: 0\nmodel name\t: AMD Ryzen\nflags\t\t: fpu sse4_2 avx avx2 fma\n"
GRAVITON = "processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\nCPU part\t: 0xd40\n"


def answers(tokens: list[list[int]], logprobs: list[list[float]], scored: list[list[float]] | None = None) -> Answers:
    return Answers([[1, 2]] * len(tokens), tokens, logprobs, scored)


def test_agreement_counts_prompts_whose_first_tokens_match_and_averages_logprob_differences() -> None:
    same = [*range(TOKENS), 99]
    fp32 = answers([same] * 10, [[-0.5] * 17] * 10)
    tokens = [same] * 9 + [[*range(TOKENS - 1), 7]]  # the last differs at its 16th token
    bf16 = answers(tokens, [[-0.5] * 17] * 10, scored=[[-0.4] * 17] * 5 + [[-0.5] * 17] * 5)
    result = agreement(fp32, bf16)
    assert (result.agreeing, result.prompts) == (9, 10)
    assert result.mean_logprob_diff == pytest.approx(0.05)
    assert result.passed


def test_a_difference_after_the_sixteenth_token_does_not_count() -> None:
    fp32 = answers([[*range(TOKENS), 1]], [[0.0] * 17])
    bf16 = answers([[*range(TOKENS), 2]], [[0.0] * 17], scored=[[0.0] * 17])
    assert agreement(fp32, bf16).agreeing == 1


@pytest.mark.parametrize(
    ("agreeing", "diff", "passed"),
    [(18, 0.0999, True), (17, 0.0, False), (20, 0.1, False), (20, 0.5, False)],
)
def test_the_check_needs_90_percent_and_a_mean_difference_under_a_tenth(
    agreeing: int, diff: float, passed: bool
) -> None:
    assert Agreement(agreeing, 20, diff).passed is passed


def test_native_bf16_is_read_from_the_cpu_flags() -> None:
    assert cpu_dtype.cpu_flags(AMX) & cpu_dtype.NATIVE_BF16 == {"avx512_bf16", "amx_bf16"}
    assert cpu_dtype.cpu_flags(GRAVITON) & cpu_dtype.NATIVE_BF16 == {"bf16"}
    assert not cpu_dtype.cpu_flags(AVX2) & cpu_dtype.NATIVE_BF16
    assert cpu_dtype.cpu_model(GRAVITON) == "0xd40"


def test_without_native_bf16_auto_is_float32_and_no_check_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dtype_check, "check", lambda *args: pytest.fail("no check on a CPU without native bf16"))
    decision = cpu_dtype.decide("/models/chat", {}, AVX2)
    assert decision.dtype == "float32" and "no native bf16" in decision.reason


@pytest.mark.parametrize(
    ("result", "dtype"), [(Agreement(19, 20, 0.02), "bfloat16"), (Agreement(3, 20, 0.9), "float32")]
)
def test_with_native_bf16_the_check_decides(monkeypatch: pytest.MonkeyPatch, result: Agreement, dtype: str) -> None:
    monkeypatch.setattr(dtype_check, "check", lambda model_path, engine_args: result)
    decision = cpu_dtype.decide("/models/chat", {}, AMX)
    assert decision.dtype == dtype
    assert result.summary() in decision.reason and "amx_bf16, avx512_bf16" in decision.reason


def test_the_decision_is_made_once_then_read_from_its_record(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("BENTOML_HOME", str(tmp_path))
    monkeypatch.setattr(cpu_dtype, "read_cpuinfo", lambda: AMX)
    checks = []

    def check(model_path: str, engine_args: dict[str, object]) -> Agreement:
        checks.append(model_path)
        return Agreement(20, 20, 0.01)

    monkeypatch.setattr(dtype_check, "check", check)
    starts = [threading.Thread(target=cpu_dtype.recorded_dtype, args=("/models/chat", {})) for _ in range(3)]
    for start in starts:
        start.start()
    for start in starts:
        start.join()
    assert checks == ["/models/chat"]  # three servers starting together: one check, under the lock
    assert cpu_dtype.recorded_dtype("/models/chat", {}).dtype == "bfloat16"
    [record] = (tmp_path / "bento-oai" / "dtype").glob("*.json")
    assert json.loads(record.read_text())["dtype"] == "bfloat16"
    cpu_dtype.recorded_dtype("/models/chat", {"max_model_len": 1024})  # other numeric engine arguments: decided anew
    cpu_dtype.recorded_dtype("/models/chat", {"enable_log_requests": False})  # a logging argument: the same record
    assert checks == ["/models/chat", "/models/chat"]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_a_configured_dtype_is_kept(monkeypatch: pytest.MonkeyPatch, dtype: str) -> None:
    monkeypatch.setattr(cpu_dtype, "recorded_dtype", lambda *args: pytest.fail("a forced dtype is not decided"))
    assert cpu_dtype.resolve_dtype("chat", "/models/chat", {"dtype": dtype}, "generate", on_cpu=True) == dtype


def test_auto_is_vllms_own_on_gpu_and_float32_for_an_embedding_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cpu_dtype, "recorded_dtype", lambda *args: pytest.fail("no check for these"))
    assert cpu_dtype.resolve_dtype("chat", "/models/chat", {}, "generate", on_cpu=False) == "auto"
    assert cpu_dtype.resolve_dtype("embed", "/models/embed", {"dtype": "auto"}, "pooling", on_cpu=True) == "float32"


def test_auto_with_lora_is_float32_without_a_check(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cpu_dtype, "recorded_dtype", lambda *args: pytest.fail("no bf16 engine with LoRA"))
    engine = {"dtype": "auto", "enable_lora": True, "max_loras": 4}
    assert cpu_dtype.resolve_dtype("chat", "/models/chat", engine, "generate", on_cpu=True) == "float32"
    assert cpu_dtype.resolve_dtype(
        "chat", "/models/chat", {**engine, "dtype": "bfloat16"}, "generate", on_cpu=True
    ) == ("bfloat16")  # forced: the config's own choice


def test_a_failed_check_run_reports_its_exception_not_the_shutdown_noise_after_it() -> None:
    from engines.dtype_check import cause

    stderr = "(EngineCore pid=5) ERROR boom\nRuntimeError: Insufficient space in /dev/shm\n  warnings.warn('leak')\n"
    assert cause(stderr) == "RuntimeError: Insufficient space in /dev/shm"
    assert cause("just this\n") == "just this" and cause("") == "no output"
