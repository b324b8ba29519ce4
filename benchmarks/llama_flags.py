"""CMake flags for ``make bench``'s llama.cpp build: this CPU's instruction sets, each as ggml's own option, with
``GGML_NATIVE`` off so that AMX stays out. On a Sapphire Rapids machine (amx_int8) the native build's AMX kernels,
which ggml uses for the Q4_1 GGUF, crashed llama.cpp's server on its first generation (a general protection
fault in libggml-cpu.so, seen in dmesg); the AVX-512 kernels are what it then runs, as on any AVX-512 CPU.
Usage: ``CMAKE_ARGS="$(python benchmarks/llama_flags.py)" pip install llama-cpp-python``.
"""

from __future__ import annotations

from pathlib import Path

GGML_OPTIONS = {  # /proc/cpuinfo flag -> ggml's CMake option
    "avx": "GGML_AVX",
    "avx2": "GGML_AVX2",
    "fma": "GGML_FMA",
    "f16c": "GGML_F16C",
    "bmi2": "GGML_BMI2",
    "avx_vnni": "GGML_AVX_VNNI",
    "avx512f": "GGML_AVX512",
    "avx512vbmi": "GGML_AVX512_VBMI",
    "avx512_vnni": "GGML_AVX512_VNNI",
    "avx512_bf16": "GGML_AVX512_BF16",
}


def cmake_args(cpuinfo: str) -> str:
    flags = {flag for line in cpuinfo.splitlines() if line.startswith("flags") for flag in line.split(":")[1].split()}
    options = ["GGML_NATIVE=OFF", *(f"{option}=ON" for flag, option in GGML_OPTIONS.items() if flag in flags)]
    options += ["GGML_AMX_TILE=OFF", "GGML_AMX_INT8=OFF", "GGML_AMX_BF16=OFF"]
    return " ".join(f"-D{option}" for option in options)


if __name__ == "__main__":
    print(cmake_args(Path("/proc/cpuinfo").read_text()))
