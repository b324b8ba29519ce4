"""The OpenAI-compatible ASGI apps the BentoML service mounts: the API at ``/v1`` and vLLM's root-level routes.

Endpoints (reference: https://platform.openai.com/docs/api-reference), one package each under ``endpoints/``:

- ``GET  /v1/models``, ``GET /v1/models/{id}``: ``models``
- ``POST /v1/chat/completions``: ``chat_completions`` (JSON or SSE stream); with ``store: true`` kept, and served by
  ``GET /v1/chat/completions``, ``GET``/``POST``/``DELETE /v1/chat/completions/{id}``, ``.../messages``
- ``POST /v1/completions``: ``completions`` (JSON or SSE stream)
- ``POST /v1/embeddings``: ``embeddings``
- ``POST /v1/responses``, ``GET``/``DELETE /v1/responses/{id}``, ``.../input_items``, ``.../cancel``,
  ``POST /v1/responses/input_tokens``: ``responses``
- ``/v1/conversations`` and ``/v1/conversations/{id}/items``: ``conversations``
- ``POST``/``GET /v1/files``, ``GET``/``DELETE /v1/files/{id}``, ``GET /v1/files/{id}/content``: ``files`` (the
  upload's body streamed, not read whole by the guard)
- ``POST``/``GET /v1/batches``, ``GET /v1/batches/{id}``, ``POST /v1/batches/{id}/cancel``: ``batches`` (and
  ``batches.runner``, which runs their lines through this app)
- ``POST /v1/load_lora_adapter``, ``POST /v1/unload_lora_adapter``: ``lora`` (admin keys only, vLLM's shapes)
- ``POST /tokenize``, ``POST /detokenize``: ``tokenize`` (vLLM's extension, at the root as vLLM serves it)
- ``GET  /``, ``GET /playground`` (+ its files and ``/playground/config``): ``playground/``, the chat page

Every route but the playground's page and files needs ``Authorization: Bearer <key>`` (``server/auth.py``) and
passes the body/disconnect guard (``server/guard.py``); the ``/v1`` routes also pass per-model admission control
(``server/admission.py``); every error is OpenAI's envelope (``core/errors.py``). Server-wide, the service adds
request ids and the access log (``server/access_log.py``) and OpenAI-shaped 404/405s (``server/envelope.py``).
This is the only module that imports the endpoints. The factories take everything the routes need as arguments:
no module globals, no ``app.state``.
"""

from __future__ import annotations

from fastapi import FastAPI

from openai_routes.core.adapters import AdapterLoader
from openai_routes.core.errors import install_error_handlers
from openai_routes.core.limits import FORM_OVERHEAD, Limits, MediaLimits
from openai_routes.core.metrics import ServerMetrics
from openai_routes.core.registry import ModelRegistry
from openai_routes.endpoints.batches import router as batches
from openai_routes.endpoints.batches.runner import BatchRunner
from openai_routes.endpoints.chat_completions import router as chat_completions
from openai_routes.endpoints.chat_completions import stored as stored_chat_completions
from openai_routes.endpoints.completions import router as completions
from openai_routes.endpoints.conversations import router as conversations
from openai_routes.endpoints.embeddings import router as embeddings
from openai_routes.endpoints.files import router as files
from openai_routes.endpoints.lora import router as lora
from openai_routes.endpoints.models import router as models
from openai_routes.endpoints.responses import router as responses
from openai_routes.endpoints.tokenize import router as tokenize
from openai_routes.pipeline.run import RunSettings
from openai_routes.playground import router as playground
from openai_routes.server.admission import Admission, Gates
from openai_routes.server.auth import APIKeyMiddleware, KeyRing
from openai_routes.server.guard import Drain, RequestGuard
from openai_routes.store.book import ResponseBook


def create_app(
    registry: ModelRegistry,
    keyring: KeyRing,
    limits: Limits,
    metrics: ServerMetrics,
    drain: Drain,
    book: ResponseBook,
    admin: tuple[KeyRing, AdapterLoader] | None = None,
    batch_runner: BatchRunner | None = None,
    media: MediaLimits | None = None,
) -> FastAPI:
    """The OpenAI API, mounted at ``/v1``; with ``admin`` (the admin keys and the adapter loader), the admin routes;
    ``batch_runner`` (started by the service) runs its batches' lines through this app; ``media``: the images
    requests may carry (the config's ``media:``)."""
    app = FastAPI(title="bento-oai: OpenAI-compatible API", docs_url=None, redoc_url=None)
    install_error_handlers(app)
    app.include_router(models.create_router(registry))
    runs = RunSettings(limits.request_timeout, metrics)
    app.include_router(chat_completions.create_router(registry, limits, runs, book, media))
    app.include_router(stored_chat_completions.create_router(book))
    app.include_router(completions.create_router(registry, limits, runs))
    app.include_router(embeddings.create_router(registry, limits, metrics))
    app.include_router(responses.create_router(registry, limits, runs, book, media))
    app.include_router(conversations.create_router(book))
    app.include_router(files.create_router(book))
    app.include_router(batches.create_router(book))
    if admin is not None:
        app.include_router(lora.create_router(admin[1]))
    # Starlette runs the last added middleware first: key check, then body/disconnect guard, then admission.
    gates = Gates(limits.max_in_flight, limits.max_queued)
    app.add_middleware(Admission, registry=registry, gates=gates, retry_after=limits.retry_after, metrics=metrics)
    upload = {files.UPLOAD: limits.max_file_bytes + FORM_OVERHEAD}  # its body passes the guard as it comes
    protect(app, keyring, limits, drain, admin=None if admin is None else admin[0], streamed=upload)
    if batch_runner is not None:
        batch_runner.attach(app, gates)
    return app


def create_root_app(
    registry: ModelRegistry,
    keyring: KeyRing,
    limits: Limits,
    drain: Drain,
    *,
    playground_page: bool = True,
    media: MediaLimits | None = None,
) -> FastAPI:
    """The routes served at the server's root, mounted at ``/``: BentoML hands it only the paths it routes.

    No admission control: nothing here runs in the engine, and the per-model gates belong to the ``/v1`` app.
    With ``playground_page`` (the config's ``playground``) it serves the chat page at ``/``, ahead of BentoML's.
    """
    app = FastAPI(title="bento-oai: root routes", docs_url=None, redoc_url=None, openapi_url=None)
    install_error_handlers(app)
    app.include_router(tokenize.create_router(registry, limits, media))
    public_paths: frozenset[str] = frozenset()
    if playground_page:
        app.include_router(playground.create_router(keyring))
        public_paths = playground.PUBLIC_PATHS
    protect(app, keyring, limits, drain, public_paths)
    return app


def protect(
    app: FastAPI,
    keyring: KeyRing,
    limits: Limits,
    drain: Drain,
    public_paths: frozenset[str] = frozenset(),
    admin: KeyRing | None = None,
    streamed: dict[str, int] | None = None,
) -> None:
    """The outermost layers of every app: the key check first (``public_paths`` exempt, the admin routes for
    ``admin``'s keys), then the body/disconnect/draining guard (``streamed``: POST paths whose body passes through,
    with its cap)."""
    app.add_middleware(RequestGuard, max_body_bytes=limits.max_body_bytes, drain=drain, streamed=streamed)
    admin_paths = lora.ADMIN_PATHS if admin is not None else frozenset()
    app.add_middleware(
        APIKeyMiddleware, keyring=keyring, public_paths=public_paths, admin=admin, admin_paths=admin_paths
    )
