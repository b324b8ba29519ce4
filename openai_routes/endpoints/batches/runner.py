"""``BatchRunner``: each worker's loop over the batch work of the one database (``store/batches.py``), so replicas
share it.

One step at a time: claim a batch that needs a holder (validate it, finalize it, cancel it, expire it:
``finalize.py``); else look whether a batch this worker runs lines of was cancelled or is finalizing (its lines
here are aborted); else claim lines to run, as many as there is room for. Room is idle capacity: a worker runs at
most ``lines_in_flight`` lines, and a line of a model starts only while that model's admission gate has
``reserve`` sequences free beyond it, no request waits, and no interactive request runs or ended in the last
``cooldown`` seconds: while interactive traffic lasts, the lines in the engine drain and none replace them (the engine
is shared: every line running slows an interactive request's first token), and when it pauses they fill the idle
engine again. Each line goes through the app in-process (``dispatch.py``); its output (or error) line
is written by the worker that holds it, once. A line refused for the moment (429, or 503 while the server drains or
an engine is down) goes back to pending, for this worker or another. Claims are leases renewed every third of
``lease``: at a clean stop they are given back at once; after a SIGKILL they lapse and other workers (or the
restarted one) take them over.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time

from starlette.types import ASGIApp

from openai_routes.core.errors import bad_request
from openai_routes.core.limits import BatchLimits
from openai_routes.core.metrics import ServerMetrics
from openai_routes.core.registry import ModelRegistry
from openai_routes.endpoints.batches.dispatch import Answer, call
from openai_routes.endpoints.batches.finalize import Finalizer
from openai_routes.server.admission import Gates
from openai_routes.server.guard import Drain
from openai_routes.store.batch_lines import ClaimedLine
from openai_routes.store.batches import BatchStore
from openai_routes.store.book import ResponseBook

logger = logging.getLogger(__name__)

RETRY_LATER = (429, 503)
MAX_ATTEMPTS = 5  # a line refused this many times (429/503) is recorded with its last answer


class BatchRunner:
    def __init__(
        self, book: ResponseBook, registry: ModelRegistry, limits: BatchLimits, metrics: ServerMetrics, drain: Drain
    ) -> None:
        self.book = book
        self.registry = registry
        self.limits = limits
        self.metrics = metrics
        self.drain = drain
        self.worker = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self.app: ASGIApp | None = None
        self.gates: Gates | None = None
        self.lines: dict[int, tuple[ClaimedLine, asyncio.Event, asyncio.Task[None]]] = {}
        self.tasks: list[asyncio.Task[None]] = []

    @property
    def store(self) -> BatchStore:
        return self.book.state.batches

    def attach(self, app: ASGIApp, gates: Gates) -> None:
        """The app the lines go through, and the gates whose idle room they take (``create_app``)."""
        self.app, self.gates = app, gates

    def start(self) -> None:
        self.tasks = [asyncio.create_task(self.run()), asyncio.create_task(self.keep_leases())]

    async def stop(self) -> None:
        """Stop claiming, abort the lines running here, and give every claim back (they go on elsewhere, or here
        after a restart)."""
        for task in self.tasks:
            task.cancel()
        for _line, abort, _task in self.lines.values():
            abort.set()
        running = [task for _line, _abort, task in self.lines.values()]
        await asyncio.gather(*self.tasks, *running, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self.store.release(self.worker)

    async def keep_leases(self) -> None:
        """Renew this worker's claims every third of a lease, so they lapse only when it is gone."""
        while True:
            await asyncio.sleep(self.limits.lease / 3)
            try:
                await self.store.renew(self.worker, self.limits.lease)
            except Exception:
                logger.exception("renewing the batch leases failed; retrying")

    async def run(self) -> None:
        while True:
            try:
                busy = await self.step()
            except Exception:
                logger.exception("a batch step failed; retrying")
                busy = False
            await asyncio.sleep(0.01 if busy else self.limits.poll)

    async def step(self) -> bool:
        """One piece of work; whether there was any (the loop looks again at once)."""
        if self.drain.draining:
            return False
        claimed = await self.store.claim_batch(self.worker, self.limits.lease)
        if claimed is not None:
            await Finalizer(self.book.state, self.worker, self.limits, self.metrics).handle(claimed)
            return True
        await self.abort_stopped()
        return await self.fill()

    async def abort_stopped(self) -> None:
        """Abort the lines here whose batch is no longer running (cancelled, expired, finalizing, gone)."""
        batches = {line.batch_id for line, _abort, _task in self.lines.values()}
        if not batches:
            return
        statuses = await self.store.statuses(batches)
        for line, abort, _task in self.lines.values():
            if statuses.get(line.batch_id) != "in_progress":
                abort.set()

    def full_models(self) -> tuple[list[str], int]:
        """The models with no idle room for a batch line, and how many lines the others have room for."""
        assert self.gates is not None
        full, room = [], 0
        moment = time.monotonic()
        for model in self.registry.models():
            gate = self.gates.of(model)
            free = gate.capacity - self.limits.reserve - gate.in_use
            quiet = not gate.interactive and moment - gate.interactive_at >= self.limits.cooldown
            if gate.waiters or free < 1 or not quiet:
                full.append(model.id)
            elif model.root == model.id:  # an adapter's room is its base's
                room += free
        return full, room

    async def fill(self) -> bool:
        full, room = self.full_models()
        wanted = min(self.limits.lines_in_flight - len(self.lines), max(room, 1))
        if wanted < 1:
            return False
        claimed = await self.book.state.batch_lines.claim_lines(self.worker, self.limits.lease, wanted, full)
        for line in claimed:
            abort = asyncio.Event()
            self.lines[line.seq] = (line, abort, asyncio.create_task(self.run_line(line, abort)))
        return bool(claimed)

    async def run_line(self, line: ClaimedLine, abort: asyncio.Event) -> None:
        self.metrics.batch_lines_in_flight.inc()
        request_id = f"req_{secrets.token_hex(12)}"
        try:
            answer = await self.answer(line, request_id, abort)
            if answer.status == 0:  # aborted: the batch's finalizer records the line (cancelled, expired)
                return
            if answer.status in RETRY_LATER and line.attempts < MAX_ATTEMPTS:
                await self.book.state.batch_lines.put_back(line, self.worker)
                return
            failed = answer.status >= 400
            result = {
                "id": f"batch_req_{secrets.token_hex(12)}", "custom_id": line.custom_id,
                "response": {"status_code": answer.status, "request_id": request_id, "body": answer.body},
                "error": None,
            }  # fmt: skip
            if await self.book.state.batch_lines.finish_line(line, self.worker, result, failed):
                self.metrics.batch_lines.labels(status="failed" if failed else "completed").inc()
        except Exception:
            logger.exception("a batch line failed to run; it goes back to pending")
            with contextlib.suppress(Exception):
                await self.book.state.batch_lines.put_back(line, self.worker)
        finally:
            self.metrics.batch_lines_in_flight.dec()
            self.lines.pop(line.seq, None)

    async def answer(self, line: ClaimedLine, request_id: str, abort: asyncio.Event) -> Answer:
        if line.body.get("stream") is True:
            refused = bad_request("Streaming is not available in a batch: leave 'stream' out.", param="stream")
            return Answer(refused.status, refused.body())
        assert self.app is not None
        return await call(self.app, line.endpoint, line.body, line.owner, request_id, abort)
