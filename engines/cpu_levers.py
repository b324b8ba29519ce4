"""vLLM's CPU levers that measured faster (``benchmarks/levers.py``; figures in ``benchmarks/README.md``).

vLLM's CPU backend binds the engine's OpenMP threads to one logical CPU per physical core and keeps
``local_world_size`` (1) of them for the API process. On a 2-core machine that halves the engine's compute; binding
both cores (none kept) decoded 1.4x faster offline and served faster too. Machines with more cores keep vLLM's
choice: one core of many is a small price for an API process that never waits. Set in the engines' environment
before they start, under what the environment or the config's ``env`` already says.
"""

from __future__ import annotations

import logging
import os

logger = logging.getLogger(__name__)

SMALL_MACHINE_CORES = 2  # physical cores at or below which the engine gets them all (measured on 2)


def omp_binding(cpus: list[tuple[int, int]]) -> dict[str, str]:
    """The engine's thread binding for ``(logical id, physical core)`` pairs of the CPUs this process may use: on a
    small machine one logical CPU per physical core (the last, as vLLM picks) and none reserved; else nothing."""
    cores: dict[int, int] = {}
    for cpu, core in sorted(cpus):
        cores[core] = cpu
    if not 1 < len(cores) <= SMALL_MACHINE_CORES:
        return {}
    bound = ",".join(str(cpu) for cpu in sorted(cores.values()))
    return {"VLLM_CPU_OMP_THREADS_BIND": bound, "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}


def export_cpu_levers() -> None:
    """The levers into this process's environment (vLLM's engine processes inherit it), logged once."""
    from vllm.utils.cpu_resource_utils import get_allowed_cpu_list

    levers = omp_binding([(cpu.id, cpu.physical_core) for cpu in get_allowed_cpu_list()])
    applied = {name: value for name, value in levers.items() if name not in os.environ}
    os.environ.update(applied)
    if applied:
        logger.info("CPU levers: %s", ", ".join(f"{name}={value}" for name, value in applied.items()))
