"""The OpenAI-compatible ASGI app that the BentoML service mounts at ``/v1``.

Endpoints (reference: https://platform.openai.com/docs/api-reference):

- ``GET  /v1/models``, ``GET /v1/models/{id}``: models.py
- ``POST /v1/chat/completions``: chat.py (JSON or SSE stream)
- ``POST /v1/completions``: completions.py (JSON or SSE stream)
- ``POST /v1/embeddings``: embeddings.py

Every route needs ``Authorization: Bearer <key>`` (auth.py), then passes the body/disconnect guard (guard.py)
and per-model admission control (admission.py); every error is OpenAI's envelope (errors.py). Server-wide,
the service adds request ids and the access log (access.py) and OpenAI-shaped 404/405s (envelope.py).
``create_app`` takes everything the routes need as arguments: no module globals, no ``app.state``.
"""

from __future__ import annotations

from fastapi import FastAPI

from openai_routes import chat, completions, embeddings, models
from openai_routes.admission import Admission
from openai_routes.auth import APIKeyMiddleware, KeyRing
from openai_routes.errors import install_error_handlers
from openai_routes.guard import Drain, RequestGuard
from openai_routes.limits import Limits
from openai_routes.metrics import ServerMetrics
from openai_routes.registry import ModelRegistry


def create_app(
    registry: ModelRegistry, keyring: KeyRing, limits: Limits, metrics: ServerMetrics, drain: Drain
) -> FastAPI:
    app = FastAPI(title="bento-oai: OpenAI-compatible API", docs_url=None, redoc_url=None)
    install_error_handlers(app)
    app.include_router(models.create_router(registry))
    app.include_router(chat.create_router(registry, limits, metrics))
    app.include_router(completions.create_router(registry, limits, metrics))
    app.include_router(embeddings.create_router(registry, limits, metrics))
    # Starlette runs the last added middleware first: key check, then body/disconnect guard, then admission.
    app.add_middleware(
        Admission,
        registry=registry,
        max_in_flight=limits.max_in_flight,
        max_queued=limits.max_queued,
        retry_after=limits.retry_after,
        metrics=metrics,
    )
    app.add_middleware(RequestGuard, max_body_bytes=limits.max_body_bytes, drain=drain)
    app.add_middleware(APIKeyMiddleware, keyring=keyring)
    return app
