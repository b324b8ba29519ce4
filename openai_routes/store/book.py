"""Stored responses as the routes see them: the store (opened at startup), the responses running in the
background, and the rules around both.

- Every lookup is by id *and* owner (the digest of the API key that made the response): another key's response
  does not exist for the caller, whatever the endpoint (404, or 400 ``previous_response_not_found``).
- A background response runs as a task of this worker, not of its HTTP request, so it survives its client.
  Cancelling it cancels the task, whose generation aborts the engine request; the record says ``cancelled`` and a
  finishing task never overwrites that. A cancel answered by another replica reaches the run through its record,
  which the run's watcher reads every second. At shutdown, what still runs is cancelled and recorded ``failed``.
- A response still ``queued`` or ``in_progress`` long after its deadline belongs to a worker that died without
  saying so (SIGKILL, OOM): it reads as ``failed`` (and is recorded so), never as running forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine
from typing import Any

from openai_routes.core.errors import APIError, bad_request, service_unavailable
from openai_routes.store import ResponseRecord, ResponseStore, StateStore, StoreFullError, StoreLimits

logger = logging.getLogger(__name__)

UNFINISHED = ("queued", "in_progress")
FINISHED = ("completed", "incomplete", "failed", "cancelled")
CANCEL_POLL = 1.0  # seconds between two looks at a background run's record, for a cancel from another replica
STOPPED = {  # every field of OpenAI's ResponseError, as the response object's ``error``
    "code": "server_error",
    "message": "The service stopped before the response finished.",
    "param": None,
    "type": None,
    "misalignment": None,
}


def response_not_found(response_id: str) -> APIError:
    return APIError(404, f"Response with id '{response_id}' not found.", code="not_found", param="response_id")


def failed(record: ResponseRecord, error: dict[str, str | None]) -> ResponseRecord:
    response = {**record.response, "status": "failed", "error": error}
    return ResponseRecord(**{**vars(record), "status": "failed", "response": response})


class ResponseBook:
    def __init__(self, stale_after: float) -> None:
        self.stale_after = stale_after  # seconds after which an unfinished response cannot still be running
        self._state: StateStore | None = None
        self.runs: dict[str, asyncio.Task[None]] = {}
        self.cancelled: set[str] = set()
        self.purger: asyncio.Task[None] | None = None

    async def open(self, url: str, limits: StoreLimits, *, purge_every: float) -> None:
        self._state = await StateStore.open(url, limits)
        self.purger = asyncio.create_task(self._state.run_purger(purge_every))

    async def close(self) -> None:
        """Cancel what still runs (each run records itself ``failed``), then close the store."""
        runs = list(self.runs.values())
        for task in runs:
            task.cancel()
        await asyncio.gather(*runs, return_exceptions=True)
        if self.purger is not None:
            self.purger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.purger
        if self._state is not None:
            await self._state.close()
            self._state = None

    @property
    def state(self) -> StateStore:
        """The store of every state API (a 503 until it is open)."""
        if self._state is None:
            raise service_unavailable("The store is not open yet. Retry later.")
        return self._state

    @property
    def store(self) -> ResponseStore:
        return self.state.responses

    async def find(self, response_id: str, owner: str) -> ResponseRecord:
        record = await self.store.get(response_id, owner)
        if record is None:
            raise response_not_found(response_id)
        stale = time.time() - record.created_at > self.stale_after
        if record.status in UNFINISHED and response_id not in self.runs and stale:
            record = failed(record, STOPPED)
            await self.store.update(record, unless=FINISHED)
        return record

    async def history(self, previous_id: str, owner: str) -> list[dict[str, Any]]:
        """The chain's items, oldest first: each earlier response's input items, then its output."""
        chain = await self.store.chain(previous_id, owner)
        if chain is None:
            raise bad_request(
                f"Previous response with id '{previous_id}' not found.",
                param="previous_response_id",
                code="previous_response_not_found",
            )
        return [item for record in chain for item in (*record.input_items, *record.response.get("output", []))]

    async def save(self, record: ResponseRecord) -> None:
        """Store ``record`` (a 400 ``response_too_large`` past the size cap)."""
        try:
            await self.store.save(record)
        except StoreFullError as exc:
            raise bad_request(str(exc), param="input", code="response_too_large") from None

    def run_in_background(self, record: ResponseRecord, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(work, name=f"response {record.id}")
        self.runs[record.id] = task
        watch = asyncio.create_task(self.watch(record, task))
        task.add_done_callback(lambda _: (self.runs.pop(record.id, None), watch.cancel()))
        return task

    async def watch(self, record: ResponseRecord, task: asyncio.Task[None]) -> None:
        """Stop the run once its record says ``cancelled``: a cancel that another replica answered."""
        while not task.done():
            await asyncio.sleep(CANCEL_POLL)
            with contextlib.suppress(Exception):  # a database hiccup: look again next time
                stored = await self.store.get(record.id, record.owner)
                if stored is not None and stored.status == "cancelled" and not task.done():
                    self.cancelled.add(record.id)
                    task.cancel()

    async def finish(self, record: ResponseRecord) -> None:
        """Record how a background run ended, unless it was cancelled meanwhile."""
        await self.store.update(record, unless=("cancelled",))

    async def stopped(self, record: ResponseRecord) -> None:
        """A background run was cancelled: by its owner (``cancel`` recorded it) or by the shutdown."""
        if record.id in self.cancelled:
            self.cancelled.discard(record.id)
            return
        await self.store.update(failed(record, STOPPED), unless=FINISHED)

    async def cancel(self, response_id: str, owner: str) -> ResponseRecord:
        record = await self.find(response_id, owner)
        if not record.response.get("background"):
            raise bad_request("Only responses created with 'background: true' can be cancelled.", param=None)
        if record.status == "cancelled":
            return record
        if record.status in FINISHED:
            raise bad_request(f"Cannot cancel a response that is {record.status}.", param=None)
        response = {**record.response, "status": "cancelled"}
        cancelled = ResponseRecord(**{**vars(record), "status": "cancelled", "response": response})
        if not await self.store.update(cancelled, unless=FINISHED):
            return await self.find(response_id, owner)  # it finished meanwhile
        task = self.runs.get(response_id)
        if task is not None:
            self.cancelled.add(response_id)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(task)
        return cancelled
