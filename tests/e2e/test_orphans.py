"""Nothing outlives its owner: a SIGKILL of the worker or of the arbiter leaves no process of theirs running.

``bentoml serve`` becomes the circus arbiter (``circusd``); it runs the worker (``_bentoml_impl.worker.service``),
which owns vLLM's engine processes (``VLLM::EngineCore`` and its ``VLLM::Worker``, one pair per model of
``configs/default.yaml``). The OOM killer or a supervisor's timeout can SIGKILL either:

- the worker: its engine processes must be gone within 20 s (circus then starts a new worker, with new engines, which
  must serve: ``tests.e2e.servers.serves_again``, checked before the pool stops the server, while the next tests run);
- the arbiter: the worker and its engines must be gone within 20 s, and the port is free for a new server (bound
  here as uvicorn binds it: nothing of the old server holds it).

Each test is the last one on a server the pool boots anyway (``tests.e2e.servers``): the worker test on the built
Bento's (``bentoml serve <tag>``, the default config's two models, after test_bento), the arbiter test on the second
PostgreSQL replica (the chat model alone, after the replica tests). Each remembers every process it saw and kills
the survivors by pid, whether it passed or not.
"""

from __future__ import annotations

import contextlib
import json
import signal
from collections.abc import Iterator

import openai
import psutil
import pytest

from tests.e2e.conftest import CHAT_MODEL
from tests.e2e.pool import ServerPool
from tests.e2e.probes import wait_for
from tests.e2e.server import Server, port_is_free, still_alive
from tests.e2e.servers import KILLED_BATCH_LINES

WORKER_MODULE = "_bentoml_impl.worker.service"
WITHIN = 20  # seconds: the bound the issue sets


def command_line(process: psutil.Process) -> str:
    try:
        return " ".join(process.cmdline()).strip() or process.name()
    except psutil.NoSuchProcess:
        return ""


def workers_of(server: Server) -> list[psutil.Process]:
    assert server.process is not None
    return [p for p in psutil.Process(server.process.pid).children() if WORKER_MODULE in command_line(p)]


def engine_processes(processes: list[psutil.Process]) -> list[psutil.Process]:
    return [p for p in processes if command_line(p).startswith("VLLM::")]


@contextlib.contextmanager
def killed_at_the_end(processes: list[psutil.Process]) -> Iterator[None]:
    """Kill whatever of ``processes`` still runs on the way out (psutil checks create times: no recycled pid)."""
    try:
        yield
    finally:
        for process in still_alive(processes):
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        psutil.wait_procs(processes, timeout=10)


def assert_engines(processes: list[psutil.Process], models: int) -> None:
    """An ``EngineCore`` and a ``Worker`` per model."""
    engines = sorted(command_line(p).split()[0] for p in engine_processes(processes))
    assert engines == ["VLLM::EngineCore"] * models + ["VLLM::Worker"] * models, engines


@pytest.fixture
def worker_victim(pool: ServerPool) -> Server:
    """The built Bento's server (the default config: chat and embeddings), whose worker the test kills."""
    return pool.get("bento")


def start_batch(server: Server) -> str:
    """A batch whose lines are running when the worker dies (some done, some in the engine, some not started)."""
    client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=server.api_key)
    lines = [{"custom_id": f"k{i}", "method": "POST", "url": "/v1/chat/completions",
              "body": {"model": CHAT_MODEL, "messages": [{"role": "user", "content": f"Count to {i + 20}."}],
                       "max_tokens": 16}} for i in range(KILLED_BATCH_LINES)]  # fmt: skip
    text = "\n".join(json.dumps(line) for line in lines)
    file_id = client.files.create(file=("lines.jsonl", text.encode()), purpose="batch").id
    batch = client.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h")

    def running() -> bool:
        counts = client.batches.retrieve(batch.id).request_counts
        return counts is not None and 0 < counts.completed < counts.total

    wait_for(running, 120, "the batch to be part done", 0.2)
    return batch.id


@pytest.fixture
def arbiter_victim(pool: ServerPool) -> Server:
    """The second replica (``tests/configs/short-grace.yaml``: the chat model alone), whose arbiter the test kills
    (the pool's stop after it returns at once)."""
    return pool.get("replica-two")


@pytest.mark.slow
@pytest.mark.ends_server
def test_sigkill_of_the_worker_takes_its_engine_processes_along(worker_victim: Server) -> None:
    """Also SIGKILLs a batch mid-run: the restarted worker must finish it (``servers.serves_again`` checks)."""
    server = worker_victim
    server.notes["batch"] = start_batch(server)
    [worker] = workers_of(server)
    processes = [p for p in server.tree() if p.pid != worker.ppid()]  # all but the arbiter
    assert_engines(processes, models=2)
    with killed_at_the_end(processes):
        worker.send_signal(signal.SIGKILL)
        _, alive = psutil.wait_procs(processes, timeout=WITHIN)
        left = [f"{p.pid} {command_line(p)}" for p in still_alive(alive)]
        print(f"\nworker SIGKILL: {len(processes)} processes, {len(left)} left after {WITHIN} s: {left}")
        assert not left, f"still running {WITHIN} s after the worker's SIGKILL: {left}"


@pytest.mark.slow
@pytest.mark.ends_server
def test_sigkill_of_the_arbiter_takes_the_worker_and_its_engines_along(arbiter_victim: Server) -> None:
    server = arbiter_victim
    assert server.process is not None
    processes = [p for p in server.tree() if p.pid != server.process.pid]
    assert_engines(processes, models=1)
    with killed_at_the_end(processes):
        server.process.send_signal(signal.SIGKILL)
        server.process.wait(10)
        _, alive = psutil.wait_procs(processes, timeout=WITHIN)
        left = [f"{p.pid} {command_line(p)}" for p in still_alive(alive)]
        print(f"\narbiter SIGKILL: {len(processes)} processes, {len(left)} left after {WITHIN} s: {left}")
        assert not left, f"still running {WITHIN} s after the arbiter's SIGKILL: {left}"
    assert port_is_free(server.port), f"port {server.port} still held after the arbiter's SIGKILL"
