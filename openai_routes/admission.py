"""Admission control per model: a cap on requests in flight plus a bounded queue; beyond both, 429 at once.

Each model has its own gate, so a busy chat model never blocks the embedding model. Only ``POST`` calls are
admitted here; ``GET /v1/models`` is never queued, and BentoML's ``/livez``, ``/readyz`` and ``/metrics`` do not
pass through this app at all. The body was read by ``guard.RequestGuard``, which leaves it in the scope.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pydantic_core
from starlette.types import ASGIApp, Receive, Scope, Send

from openai_routes.access import current
from openai_routes.errors import overloaded
from openai_routes.guard import BODY_KEY
from openai_routes.metrics import ServerMetrics
from openai_routes.registry import ModelRegistry


class Gate:
    def __init__(self, max_in_flight: int, max_queued: int) -> None:
        self.slots = asyncio.Semaphore(max_in_flight)
        self.max_queued = max_queued
        self.queued = 0

    def full(self) -> bool:
        return self.slots.locked() and self.queued >= self.max_queued


def requested_model(scope: Scope) -> str | None:
    try:
        body: Any = pydantic_core.from_json(scope.get(BODY_KEY, b""))
    except ValueError:
        return None
    model = body.get("model") if isinstance(body, dict) else None
    return model if isinstance(model, str) else None


class Admission:
    def __init__(
        self,
        app: ASGIApp,
        registry: ModelRegistry,
        max_in_flight: int,
        max_queued: int,
        retry_after: int,
        metrics: ServerMetrics,
    ) -> None:
        self.app = app
        self.registry = registry
        self.max_in_flight = max_in_flight
        self.max_queued = max_queued
        self.retry_after = retry_after
        self.metrics = metrics
        self.gates: dict[str, Gate] = {}

    def gate(self, scope: Scope) -> tuple[str, Gate] | None:
        name = requested_model(scope)
        model = self.registry.find(name) if name else None
        if model is None:
            return None  # the route answers (404, 400) without touching an engine
        if model.id not in self.gates:
            self.gates[model.id] = Gate(self.max_in_flight, self.max_queued)
        return model.id, self.gates[model.id]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = self.gate(scope) if scope["type"] == "http" and scope["method"] == "POST" else None
        if found is None:
            await self.app(scope, receive, send)
            return
        model, gate = found
        current().model = model
        if gate.full():
            await overloaded(self.retry_after).response()(scope, receive, send)
            return
        queued, in_flight = self.metrics.queued.labels(model=model), self.metrics.in_flight.labels(model=model)
        gate.queued += 1
        queued.inc()
        try:
            await gate.slots.acquire()
        finally:
            gate.queued -= 1
            queued.dec()
        in_flight.inc()
        try:
            await self.app(scope, receive, send)
        finally:
            in_flight.dec()
            gate.slots.release()
