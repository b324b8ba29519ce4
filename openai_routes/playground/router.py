"""The playground: a chat page served by the service itself at ``/`` and ``/playground``.

The page (``openai_routes/playground/``: HTML, CSS, ES modules; no build step, no CDN, no font) is a client of
our own ``/v1`` API like any other: it streams ``/v1/chat/completions`` with the key the user types, which stays
in the browser's session storage. The server never writes a key into the page or a cookie. The page and its
files load without a key (``PUBLIC_PATHS``, exempted by ``auth.APIKeyMiddleware``); ``/playground/config``
says only whether a key is needed. ``playground: false`` in the config leaves all of this out, and ``/`` is
BentoML's own page again.

BentoML routes its index page (``/``) after the apps it mounts, so the root app's ``/`` wins over it; the rest of
BentoML's routes (``/docs.json``, ``/metrics``, ``/livez``, ``/readyz``) are untouched.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import Response

from openai_routes.core.errors import APIError
from openai_routes.server.auth import KeyRing

STATIC = Path(__file__).resolve().parent / "static"
PAGE_PATHS = ("/", "/playground")
CONFIG_PATH = "/playground/config"
ASSET_PREFIX = "/playground/static/"
ASSETS = {
    "app.js": "text/javascript",
    "api.js": "text/javascript",
    "images.js": "text/javascript",
    "markdown.js": "text/javascript",
    "snippets.js": "text/javascript",
    "style.css": "text/css",
    "favicon.svg": "image/svg+xml",
}
PUBLIC_PATHS = frozenset([*PAGE_PATHS, CONFIG_PATH, *(ASSET_PREFIX + name for name in ASSETS)])

# Nothing but this origin: no script, style, font, image or connection elsewhere, no framing, no form posts. Images
# may also be blob: URLs, which only the page itself makes: the thumbnails of the images it attaches.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",  # revalidate: a new version of the service serves its new page at once
}


def asset_not_found(name: str) -> APIError:
    return APIError(404, f"Unknown playground file: {name}", code="not_found")


def create_router(keyring: KeyRing) -> APIRouter:
    """The page, its files (read once, here) and its config; the key check is read per request, since the
    service configures the key ring in its startup hook, after the app is built."""
    router = APIRouter()
    page = (STATIC / "index.html").read_bytes()
    files = {name: (STATIC / name).read_bytes() for name in ASSETS}

    async def index() -> Response:
        return Response(page, media_type="text/html; charset=utf-8", headers=HEADERS)

    for path in PAGE_PATHS:
        router.add_api_route(path, index, methods=["GET"], include_in_schema=False)

    @router.get(CONFIG_PATH, include_in_schema=False)
    async def config() -> dict[str, bool]:
        return {"api_key_required": not keyring.disabled}

    @router.get(ASSET_PREFIX + "{name}", include_in_schema=False)
    async def asset(name: str) -> Response:
        if name not in files:
            raise asset_not_found(name)
        return Response(files[name], media_type=ASSETS[name], headers=HEADERS)

    return router
