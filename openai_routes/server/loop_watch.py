"""A watch on the worker's event loop: every stream's tokens go through it, so a callback that holds it (a
blocking call, a long computation) stalls them all. A daemon thread logs such a stall while it lasts, with where
the loop's thread is (code locations only: no request data), and how long it lasted once it ends. It is quiet once
the worker drains: the engines' shutdown holds the loop by design.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
import traceback
from collections.abc import Callable

logger = logging.getLogger(__name__)

STALL_AFTER = 5.0  # seconds without a tick before a stall is logged
TICK = 0.5  # seconds between two ticks the loop is asked to record


class LoopWatch:
    def __init__(
        self, loop: asyncio.AbstractEventLoop, quiet: Callable[[], bool], stall_after: float = STALL_AFTER
    ) -> None:
        self.loop = loop
        self.quiet = quiet
        self.stall_after = stall_after
        self.thread_id = threading.get_ident()  # the loop's thread: start() runs on it
        self.last_tick = time.monotonic()

    def start(self) -> None:
        threading.Thread(target=self.run, name="loop-watch", daemon=True).start()

    def tick(self) -> None:
        self.last_tick = time.monotonic()

    def where(self) -> str:
        frame = sys._current_frames().get(self.thread_id)
        if frame is None:
            return "unknown"
        return " <- ".join(f"{f.filename}:{f.lineno} {f.name}" for f in reversed(traceback.extract_stack(frame)[-6:]))

    def run(self) -> None:
        stalled_since: float | None = None
        while not self.loop.is_closed() and not self.quiet():
            try:
                self.loop.call_soon_threadsafe(self.tick)
            except RuntimeError:  # closed meanwhile
                return
            time.sleep(TICK)
            silent = time.monotonic() - self.last_tick
            if stalled_since is None and silent > self.stall_after:
                stalled_since = self.last_tick
                logger.warning("event loop stalled for %.1f s so far, at %s", silent, self.where())
            elif stalled_since is not None and silent <= TICK * 2:
                logger.warning("event loop stall ended after %.1f s", self.last_tick - stalled_since)
                stalled_since = None
