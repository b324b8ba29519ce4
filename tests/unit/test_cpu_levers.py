"""The CPU levers (``engines.cpu_levers``): on a machine of two physical cores the engine's threads get both, one
logical CPU per core, none reserved; elsewhere vLLM's own binding stays; what the operator set wins."""

from __future__ import annotations

import os

import pytest

from engines import cpu_levers
from engines.cpu_levers import omp_binding

BOTH = {"VLLM_CPU_OMP_THREADS_BIND": "0,1", "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}


@pytest.mark.parametrize(
    ("cpus", "expected"),
    [
        ([(0, 0), (1, 1)], BOTH),  # two cores, no SMT (this machine)
        ([(1, 1), (0, 0)], BOTH),
        ([(0, 0), (1, 1), (2, 0), (3, 1)], {**BOTH, "VLLM_CPU_OMP_THREADS_BIND": "2,3"}),  # two cores, SMT 2
        ([(0, 0), (1, 0)], {}),  # one core's two threads: vLLM's binding
        ([(0, 0)], {}),
        ([(cpu, cpu) for cpu in range(8)], {}),  # eight cores: keeping one for the API process costs little
    ],
)
def test_both_cores_go_to_the_engine_only_on_a_two_core_machine(
    cpus: list[tuple[int, int]], expected: dict[str, str]
) -> None:
    assert omp_binding(cpus) == expected


def test_the_levers_go_under_what_the_environment_already_says(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cpu_levers, "omp_binding", lambda cpus: BOTH)
    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", "nobind")
    monkeypatch.setenv("VLLM_CPU_NUM_OF_RESERVED_CPU", "placeholder")
    monkeypatch.delenv("VLLM_CPU_NUM_OF_RESERVED_CPU")
    cpu_levers.export_cpu_levers()
    assert os.environ["VLLM_CPU_OMP_THREADS_BIND"] == "nobind"
    assert os.environ["VLLM_CPU_NUM_OF_RESERVED_CPU"] == "0"
