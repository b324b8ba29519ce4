"""``openai_routes.server.lifecycle`` with real processes (no engine): what a worker starts dies with it, even by
SIGKILL, and a process learns that its parent died.

A stand-in worker (a Python process in a session of its own, as circus starts BentoML's) starts the reaper, then a
forked child and a spawned grandchild that would sleep for minutes, like vLLM's EngineCore and its Worker.
Every process a test starts is killed by pid at the end, whatever happened.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from openai_routes.server.lifecycle import ROOT

ENV = {**os.environ, "PYTHONPATH": str(ROOT)}  # the scripts import openai_routes

WORKER = textwrap.dedent(
    """
    import multiprocessing, subprocess, sys, time
    from openai_routes.server.lifecycle import start_reaper

    def engine():  # forked, like vLLM's EngineCore on CPU; it spawns its own child, like the engine's Worker
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
        time.sleep(300)

    if __name__ == "__main__":
        reaper = start_reaper()
        multiprocessing.get_context("fork").Process(target=engine).start()
        print(reaper.pid, flush=True)
        time.sleep(300)
    """
)

WATCHER = textwrap.dedent(
    """
    import os, sys, time
    from openai_routes.server.lifecycle import watch_parent

    watch_parent(lambda parent: (print("gone", parent, flush=True), os._exit(0)))
    print("watching", flush=True)
    time.sleep(300)
    """
)


def wait_gone(processes: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Those of ``processes`` still running (not zombies) after waiting up to ``timeout``."""
    _, alive = psutil.wait_procs(processes, timeout=timeout)
    return [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


@contextlib.contextmanager
def killed_at_the_end(processes: list[psutil.Process]) -> Iterator[list[psutil.Process]]:
    try:
        yield processes
    finally:
        for process in processes:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()  # psutil checks the create time: never a recycled pid


def start_worker(tmp_path: Path) -> tuple[subprocess.Popen[str], list[psutil.Process]]:
    """The stand-in worker; returns it and, once its descendants are up, all of them (reaper included)."""
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    worker = subprocess.Popen(
        [sys.executable, str(script)], env=ENV, stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    assert worker.stdout is not None
    reaper = int(worker.stdout.readline())
    root = psutil.Process(worker.pid)
    tree = [root]
    deadline = time.monotonic() + 60  # the spawned grandchild takes a moment: seconds on a busy machine
    while len(tree) < 4 and time.monotonic() < deadline:
        psutil.wait_procs([], timeout=0.1)
        tree = [root, *root.children(recursive=True)]
    assert reaper in [p.pid for p in tree]
    return worker, tree


def test_killing_the_worker_kills_everything_it_started_and_the_reaper(tmp_path: Path) -> None:
    """SIGKILL leaves the worker no chance to clean up; circus SIGTERMs its children on stop, which must not end
    the reaper first."""
    worker, tree = start_worker(tmp_path)
    with killed_at_the_end(tree):
        assert len(tree) == 4, tree  # worker, reaper, forked engine, its child
        [reaper] = [p for p in tree if "openai_routes.server.lifecycle" in " ".join(p.cmdline())]
        reaper.send_signal(signal.SIGTERM)
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
        assert not wait_gone(tree[1:], timeout=15), "processes outlived the worker"


def test_the_reaper_ends_with_a_worker_that_left_nothing_running(tmp_path: Path) -> None:
    script = tmp_path / "worker.py"
    script.write_text(
        "from openai_routes.server.lifecycle import start_reaper\nprint(start_reaper().pid, flush=True)\n"
    )
    worker = subprocess.Popen(
        [sys.executable, str(script)], env=ENV, stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    assert worker.stdout is not None
    reaper = psutil.Process(int(worker.stdout.readline()))
    with killed_at_the_end([reaper]):
        assert worker.wait(10) == 0
        assert not wait_gone([reaper], timeout=10), "the reaper outlived the worker"


def test_a_process_learns_that_its_parent_died(tmp_path: Path) -> None:
    script = tmp_path / "watcher.py"
    script.write_text(WATCHER)
    # The parent: starts the watcher (its output to a pipe we read), says its pid, then waits to be killed.
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import subprocess, sys, time; subprocess.Popen([sys.executable, {str(script)!r}]); time.sleep(300)",
        ],
        env=ENV,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert parent.stdout is not None
    with killed_at_the_end([psutil.Process(parent.pid)]) as processes:
        assert parent.stdout.readline().strip() == "watching"
        processes += psutil.Process(parent.pid).children()
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        assert parent.stdout.readline().split() == ["gone", str(parent.pid)]
        assert not wait_gone(processes[1:], timeout=10)


if sys.platform != "linux":  # process groups and re-parenting as Linux has them
    pytestmark = pytest.mark.skip("Linux only")
