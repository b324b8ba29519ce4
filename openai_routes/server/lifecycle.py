"""The worker's lifecycle: draining on SIGTERM, a watchdog on shutdown, and no process outliving its owner;
once the engines run, the startup heap frozen out of garbage collection (``freeze_startup_heap``).

BentoML runs ``bentoml serve`` as a circus arbiter (``circusd``) that starts the worker in a session of its own,
so the worker leads a process group; vLLM's engine processes (``EngineCore`` and its ``Worker``) and whatever they
start stay in that group, whether vLLM forks them (CPU) or spawns them (CUDA). The cases:

- **SIGTERM** (the arbiter stopping): a handler chained before uvicorn's starts the drain (``guard.Drain``: new
  requests 503, in-flight ones get the grace, then an answer) and a watchdog that exits if the shutdown still runs
  ``SHUTDOWN_MARGIN`` seconds after the grace.
- **The arbiter dies** (SIGKILL, OOM killer): the worker is re-parented, so ``os.getppid()`` changes. A watch
  thread then SIGTERMs the worker and its children as circus would: the same graceful path, and the port is
  released.
- **The worker ends**, however (shutdown, watchdog, SIGKILL, OOM killer): a small reaper process it started in its
  group (this module, run as ``python -m openai_routes.server.lifecycle <worker pid>``) sees its parent change,
  gives what is left ``REAP_WAIT`` seconds to exit (vLLM's CPU ``Worker`` can outlive its ``EngineCore``), then SIGKILLs
  the group, itself included. While the reaper lives the group keeps its id, which no new process can then get: the
  kill cannot hit anything else. It ignores SIGTERM (circus signals the worker's children on stop): it ends when
  the worker does.

Nothing here imports vLLM.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import psutil

if TYPE_CHECKING:
    from openai_routes.server.guard import Drain

logger = logging.getLogger(__name__)

SHUTDOWN_MARGIN = 15  # seconds beyond the grace before the watchdog ends a hung shutdown
PARENT_POLL = 0.5  # seconds between two looks at the parent
REAP_WAIT = 5  # seconds what the worker left gets to exit by itself before the reaper kills it
ROOT = Path(__file__).resolve().parents[2]  # where ``python -m openai_routes.server.lifecycle`` finds the package
READY = b"reaping\n"  # what the reaper says once SIGTERM cannot end it
WATCHDOG_EXIT = "shutdown still running after"  # how the watchdog's log line begins


def wait_for_parent_exit(parent: int) -> None:
    """Block until the process is no longer ``parent``'s child (it died: we were re-parented)."""
    while os.getppid() == parent:
        time.sleep(PARENT_POLL)


def watch_parent(on_exit: Callable[[int], None]) -> None:
    """Call ``on_exit(parent)`` from a daemon thread once the current parent is gone."""
    parent = os.getppid()

    def watch() -> None:
        wait_for_parent_exit(parent)
        on_exit(parent)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


class Lifecycle:
    """The worker's side, installed once at startup before the engines start."""

    def __init__(self, drain: Drain, grace: float) -> None:
        self.drain = drain
        self.grace = grace
        self.reaper: subprocess.Popen[bytes] | None = None

    def install(self) -> None:
        self.drain_on_sigterm()
        self.reaper = start_reaper()
        watch_parent(self.arbiter_gone)

    def drain_on_sigterm(self) -> None:
        """Chain a handler before uvicorn's: stop admitting, give in-flight requests the grace, bound the rest."""
        loop = asyncio.get_running_loop()
        previous = signal.getsignal(signal.SIGTERM)

        def handler(signum: int, frame: FrameType | None) -> None:
            if not self.drain.draining:
                start_watchdog(self.grace + SHUTDOWN_MARGIN)
            loop.call_soon_threadsafe(self.drain.begin, self.grace)
            if callable(previous):
                previous(signum, frame)

        signal.signal(signal.SIGTERM, handler)

    def arbiter_gone(self, arbiter: int) -> None:
        """Stop as circus stops a worker: SIGTERM to its children (each EngineCore drains for the same grace, all
        at once) and to the worker itself."""
        logger.warning("the arbiter (pid %d) is gone: shutting the worker down", arbiter)
        for child in psutil.Process().children():
            with contextlib.suppress(psutil.NoSuchProcess):
                child.send_signal(signal.SIGTERM)  # the reaper ignores it
        os.kill(os.getpid(), signal.SIGTERM)


def freeze_startup_heap() -> None:
    """Move what startup allocated (torch, transformers, vLLM, tokenizers: millions of objects) out of the
    collector's reach, as vLLM's own server does: otherwise each full collection walks all of it and stalls
    every stream for up to a second under load."""
    gc.collect()
    gc.freeze()
    logger.info("froze %d startup objects out of garbage collection", gc.get_freeze_count())


def start_watchdog(seconds: float) -> None:
    """After ``seconds``, exit (the reaper then kills the engine processes): a shutdown must not hang forever."""

    def expire() -> None:
        logger.error("%s %.0f s: exiting", WATCHDOG_EXIT, seconds)
        os._exit(1)

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()


def start_reaper() -> subprocess.Popen[bytes] | None:
    """Start the reaper in the worker's process group (None when the worker does not lead its group)."""
    if os.getpgrp() != os.getpid():
        logger.warning("the worker does not lead its process group: its engine processes could outlive it")
        return None
    command = [sys.executable, "-m", __name__, str(os.getpid())]
    reaper = subprocess.Popen(command, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
    assert reaper.stdout is not None
    with reaper.stdout:  # it says when it ignores SIGTERM: a stop right after startup must not end it first
        if reaper.stdout.readline() != READY:
            logger.warning("the reaper did not start: engine processes could outlive the worker")
            return None
    return reaper


def group_members(group: int) -> list[int]:
    """Running pids in process group ``group`` other than this process (zombies hold nothing)."""
    members = []
    for process in psutil.process_iter(["status"]):
        with contextlib.suppress(OSError, psutil.Error):
            alive = process.info["status"] != psutil.STATUS_ZOMBIE
            if alive and process.pid != os.getpid() and os.getpgid(process.pid) == group:
                members.append(process.pid)
    return members


def run_reaper(worker: int) -> None:
    """The reaper: once ``worker`` (our parent) has ended, give what it left ``REAP_WAIT`` seconds to exit, then
    SIGKILL its process group, this process included."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    group = os.getpgrp()
    if group != worker:
        return  # not the worker's group: killing it could hit others
    sys.stdout.buffer.write(READY)
    sys.stdout.close()
    wait_for_parent_exit(worker)
    deadline = time.monotonic() + REAP_WAIT
    while (left := group_members(group)) and time.monotonic() < deadline:
        time.sleep(PARENT_POLL)
    if left:
        print(f"bento-oai reaper: worker {worker} is gone; killing what it left running: {left}", file=sys.stderr)
        os.killpg(group, signal.SIGKILL)


if __name__ == "__main__":
    run_reaper(int(sys.argv[1]))
