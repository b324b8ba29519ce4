"""The engine processes a worker owns (vLLM's EngineCore and its Worker children), and their reaping.

vLLM's CPU ``Worker`` can outlive its EngineCore when both get SIGTERM at once (BentoML's circus signals the
whole tree), spinning on as an orphan. So the service remembers every descendant before shutting engines down
and kills what is left after a short wait; a watchdog bounds a shutdown that hangs anyway.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading

import psutil

logger = logging.getLogger(__name__)


def descendants() -> list[psutil.Process]:
    children: list[psutil.Process] = psutil.Process().children(recursive=True)
    return children


def reap(processes: list[psutil.Process], timeout: float = 5) -> None:
    """Wait for ``processes`` to exit, then kill the ones still running."""
    _, alive = psutil.wait_procs(processes, timeout=timeout)
    for process in alive:
        logger.warning("killing engine process %d left running after shutdown", process.pid)
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    psutil.wait_procs(alive, timeout=timeout)


def start_watchdog(seconds: float) -> None:
    """After ``seconds``, kill every descendant and exit: a shutdown must not hang forever."""

    def expire() -> None:
        logger.error("shutdown still running after %.0f s: killing engine processes and exiting", seconds)
        reap(descendants(), timeout=0)
        os._exit(1)

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()
