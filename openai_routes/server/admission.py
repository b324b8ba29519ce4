"""Admission control per model, counted in engine sequences: a cap on what runs at once plus a bounded queue;
beyond both, 429 at once.

A request holds as many sequences as it puts in the engine: ``n`` for a chat completion, prompts x ``n`` for a
completion, one per input for embeddings. So ``limits.max_in_flight`` and ``limits.max_queued`` bound what the
engine holds, not how many HTTP requests there are (a request larger than the whole capacity takes all of it,
alone). The queue is first come, first served. Each engine has its own gate, so a busy chat model never blocks
the embedding model; a LoRA adapter shares its base's (one engine runs both). Only ``POST`` calls are admitted
here; ``GET /v1/models`` is never queued, and BentoML's ``/livez``, ``/readyz`` and ``/metrics`` do not pass through
this app at all. The body was read by ``guard.RequestGuard``, which leaves it in the scope.

A request's sequences are a ``Slot``, left in the scope: acquired before the route runs and released when the
request ends, unless the route takes it over (``take_over``) for work that outlives the request. A background
response is the one such work: its POST is answered at once (``queued``, or 429 when the queue is full, as for
any request), and its run acquires the slot, waiting in the same queue, and holds it until it ends; so background
runs are bounded by the same limits, and a client that leaves while its run waits loses nothing.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import time
from collections.abc import Callable
from typing import Any

import pydantic_core
from prometheus_client import Gauge
from starlette.types import ASGIApp, Receive, Scope, Send

from openai_routes.core.context import current
from openai_routes.core.errors import overloaded
from openai_routes.core.metrics import ServerMetrics
from openai_routes.core.registry import ModelRegistry, ServedModel
from openai_routes.server.auth import INTERNAL_OWNER
from openai_routes.server.guard import BODY_KEY


class Gate:
    """One model's capacity in sequences: ``capacity`` running at once, up to ``max_queued`` more waiting."""

    def __init__(self, capacity: int, max_queued: int) -> None:
        self.capacity = capacity
        self.max_queued = max_queued
        self.in_use = 0
        self.queued = 0
        self.interactive = 0  # interactive requests (not batch lines) admitted and not ended
        self.interactive_at = -math.inf  # when one last started or ended
        self.waiters: collections.deque[tuple[int, asyncio.Future[None]]] = collections.deque()

    def weight(self, sequences: int) -> int:
        return max(1, min(sequences, self.capacity))

    def can_start(self, weight: int) -> bool:
        return not self.waiters and self.in_use + weight <= self.capacity

    def full(self, weight: int) -> bool:
        return not self.can_start(weight) and self.queued + weight > self.max_queued

    async def acquire(self, weight: int) -> None:
        if self.can_start(weight):
            self.in_use += weight
            return
        waiter = (weight, asyncio.get_running_loop().create_future())
        self.waiters.append(waiter)
        self.queued += weight
        try:
            await waiter[1]
        except asyncio.CancelledError:
            if waiter[1].done() and not waiter[1].cancelled():
                self.release(weight)  # granted, then cancelled before it could run
            else:
                with contextlib.suppress(ValueError):  # wake() may have dropped it already
                    self.waiters.remove(waiter)
                self.wake()
            raise
        finally:
            self.queued -= weight

    def release(self, weight: int) -> None:
        self.in_use -= weight
        self.wake()

    def wake(self) -> None:
        while self.waiters and self.in_use + self.waiters[0][0] <= self.capacity:
            weight, future = self.waiters.popleft()
            if not future.cancelled():  # its task was cancelled and will drop out itself
                self.in_use += weight
                future.set_result(None)


class Gates:
    """Every model's gate, made on first use; an adapter shares its base's (one engine runs both). The batch
    runner reads them too: its lines take only what interactive requests leave free."""

    def __init__(self, max_in_flight: int, max_queued: int) -> None:
        self.max_in_flight = max_in_flight
        self.max_queued = max_queued
        self.gates: dict[str, Gate] = {}

    def of(self, model: ServedModel) -> Gate:
        if model.root not in self.gates:
            self.gates[model.root] = Gate(self.max_in_flight, self.max_queued)
        return self.gates[model.root]


SLOT_KEY = "bento_oai.slot"


class Slot:
    """One request's sequences in its model's gate: held once ``acquire`` returns, until ``release``."""

    def __init__(self, gate: Gate, weight: int, queued: Gauge, in_flight: Gauge) -> None:
        self.gate = gate
        self.weight = weight
        self.queued = queued
        self.in_flight = in_flight
        self.held = False
        self.taken_over = False

    async def acquire(self) -> None:
        """Wait in the gate's queue until the sequences are granted (at once if they are held already)."""
        if self.held:
            return
        self.queued.inc()
        try:
            await self.gate.acquire(self.weight)
        finally:
            self.queued.dec()
        self.held = True
        self.in_flight.inc()

    def take_over(self) -> Callable[[], None]:
        """Take the slot over from the request, which then leaves it as it is: the caller calls what this
        returns exactly once, when its work ends."""
        self.taken_over = True
        return self.release

    def release(self) -> None:
        if self.held:
            self.held = False
            self.in_flight.dec()
            self.gate.release(self.weight)


def _count(items: Any) -> int:
    """How many prompts or inputs a prompt field holds (text, texts, token ids or lists of token ids)."""
    if isinstance(items, list) and items and not all(isinstance(item, int) for item in items):
        return len(items)
    return 1


def sequences(path: str, body: dict[str, Any]) -> int:
    """The engine sequences a request will hold; what fails validation counts 1 (the route refuses it)."""
    n = body.get("n")
    n = n if isinstance(n, int) and not isinstance(n, bool) and n >= 1 else 1
    if path.endswith("/embeddings"):
        return _count(body.get("input"))
    if path.endswith("/completions") and not path.endswith("/chat/completions"):
        return n * _count(body.get("prompt"))
    return n


def queues_itself(path: str, body: dict[str, Any]) -> bool:
    """A background response is answered at once, ``queued``: its run waits in the gate, not its POST."""
    return path.endswith("/responses") and body.get("background") is True


def json_body(scope: Scope) -> dict[str, Any]:
    try:
        body: Any = pydantic_core.from_json(scope.get(BODY_KEY, b""))
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


class Admission:
    def __init__(
        self,
        app: ASGIApp,
        registry: ModelRegistry,
        gates: Gates,
        retry_after: int,
        metrics: ServerMetrics,
    ) -> None:
        self.app = app
        self.registry = registry
        self.gates = gates
        self.retry_after = retry_after
        self.metrics = metrics

    def gate(self, path: str, body: dict[str, Any]) -> tuple[ServedModel, Gate, int] | None:
        name = body.get("model")
        model = self.registry.find(name) if isinstance(name, str) else None
        if model is None:
            return None  # the route answers (404, 400) without touching an engine
        gate = self.gates.of(model)
        return model, gate, gate.weight(sequences(path, body))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        path, body = scope.get("path", ""), json_body(scope)
        found = self.gate(path, body)
        if found is None:
            await self.app(scope, receive, send)
            return
        model, gate, weight = found
        current().model = model.id  # an adapter's own id: its requests are counted and timed under it
        interactive = INTERNAL_OWNER not in scope  # a batch line comes in-process (endpoints/batches/dispatch.py)
        if interactive:
            gate.interactive += 1
            gate.interactive_at = time.monotonic()
        if gate.full(weight):
            await overloaded(self.retry_after).response()(scope, receive, send)
            return
        labels = {"model": model.root}  # the gate's: an adapter queues and runs in its base's
        slot = scope[SLOT_KEY] = Slot(
            gate, weight, self.metrics.queued.labels(**labels), self.metrics.in_flight.labels(**labels)
        )
        if not queues_itself(path, body):
            await slot.acquire()
        try:
            await self.app(scope, receive, send)
        finally:
            if not slot.taken_over:
                slot.release()
            if interactive:
                gate.interactive -= 1
                gate.interactive_at = time.monotonic()
