"""One API request's deadline: a single timer that cancels the waits made under it once it has passed (504).

It is one timer per request, not an ``asyncio.timeout`` per step (that cost about 4 us a token, a fifth of the API
layer's work): when it fires while someone waits under it, it cancels that wait; when it fires between steps, the
next wait raises. Generations, embeddings and a background response's wait for admission all run under one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from openai_routes.core.errors import timed_out

T = TypeVar("T")


class Deadline:
    """One request's deadline: a single timer that cancels the waits made under it once it has passed."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.expired = False
        self._waiting: set[asyncio.Task[object]] = set()
        loop = asyncio.get_running_loop()
        self._timer = loop.call_at(loop.time() + timeout, self._expire)

    def _expire(self) -> None:
        self.expired = True
        for task in self._waiting:
            task.cancel()

    def cancel(self) -> None:
        self._timer.cancel()

    async def wait(self, awaitable: Awaitable[T]) -> T:
        """``await awaitable``, or raise 504 once the deadline has passed (before or while waiting)."""
        if not self.expired:
            task = asyncio.current_task()
            assert task is not None
            self._waiting.add(task)
            try:
                return await awaitable
            except asyncio.CancelledError:
                if not self.expired or task.uncancel() > 0:
                    raise  # cancelled by someone else too (client gone, shutdown): not a timeout
            finally:
                self._waiting.discard(task)
        elif isinstance(awaitable, asyncio.Future):
            awaitable.cancel()
        raise timed_out(self.timeout) from None
