"""Bearer API keys for every ``/v1`` route, as a plain ASGI middleware.

Keys come from ``BENTO_OAI_API_KEYS`` (comma-separated) and/or a keys file (one per line). Only their
SHA-256 digests are kept, and a presented key is compared with every digest in constant time. With no key
configured the server does not run open: a random key is generated and logged once, unless the config says
``auth: {mode: disabled}`` (for example behind BentoCloud's own access authorization).

A few exact paths may be public for ``GET`` (the playground's page and files: ``playground.PUBLIC_PATHS``); the
API itself never is. A request's key digest is left in its scope (``key_owner``): stored responses belong to it.

The admin routes (``admin_paths``: loading LoRA adapters) take admin keys only, from ``BENTO_OAI_ADMIN_KEYS``
(comma-separated), kept apart from the client keys: without any they are off (404), a client key gets 403, and they
need an admin key even with the client key check disabled.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from collections.abc import Iterable
from pathlib import Path

from starlette._utils import get_route_path
from starlette.types import ASGIApp, Receive, Scope, Send

from openai_routes.core.errors import APIError, invalid_api_key

logger = logging.getLogger(__name__)


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


class KeyRing:
    """The accepted keys' digests. Until ``set_keys`` or ``disable`` is called, every key is refused."""

    def __init__(self) -> None:
        self._digests: tuple[bytes, ...] = ()
        self.disabled = False

    def set_keys(self, keys: Iterable[str]) -> None:
        self._digests = tuple({_digest(key) for key in keys})
        self.disabled = False

    def disable(self) -> None:
        self._digests = ()
        self.disabled = True

    @property
    def empty(self) -> bool:
        return not self._digests

    def accepts(self, key: str) -> bool:
        digest = _digest(key)
        matched = False
        for known in self._digests:  # no early exit: the time taken does not depend on which key matched
            matched |= hmac.compare_digest(digest, known)
        return matched

    def configure(self, mode: str, env_keys: str | None, keys_file: str | None) -> None:
        """Load keys as configured; generate and log one key when keys are required but none is given."""
        if mode == "disabled":
            logger.warning("API key check disabled by config (auth.mode: disabled)")
            self.disable()
            return
        keys = read_keys(env_keys, keys_file)
        if not keys:
            generated = f"sk-bento-{secrets.token_urlsafe(24)}"
            logger.warning(
                "No API key configured (BENTO_OAI_API_KEYS or auth.keys_file); generated one for this run: %s",
                generated,
            )
            keys = [generated]
        self.set_keys(keys)
        logger.info("API key check enabled with %d key(s)", len(keys))


def read_keys(env_keys: str | None, keys_file: str | None) -> list[str]:
    keys = [key.strip() for key in (env_keys or "").split(",")]
    if keys_file:
        lines = [line.strip() for line in Path(keys_file).read_text().splitlines()]
        keys += [line for line in lines if not line.startswith("#")]
    return [key for key in keys if key]


def bearer_key(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, key = value.decode("latin-1").partition(" ")
            return key.strip() if scheme.lower() == "bearer" else None
    return None


OWNER = "key_owner"
# Set only by in-process callers (the batch runner, for the key that made the batch): a scope built by the HTTP
# server never holds it, so no client can claim an owner this way.
INTERNAL_OWNER = "bento_oai.internal_owner"


def key_owner(scope: Scope) -> str:
    """Who stored data belongs to: the hex SHA-256 of the caller's key (never the key), ``""`` with auth off."""
    owner: str = scope.get("state", {}).get(OWNER, "")
    return owner


def admin_only() -> APIError:
    return APIError(
        403, "This route needs an admin key (BENTO_OAI_ADMIN_KEYS).", type="permission_error", code="permission_denied"
    )


def admin_off() -> APIError:
    return APIError(404, "The admin API is off: no admin key is configured.", code="not_found")


class APIKeyMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        keyring: KeyRing,
        public_paths: frozenset[str] = frozenset(),
        admin: KeyRing | None = None,
        admin_paths: frozenset[str] = frozenset(),
    ) -> None:
        self.app = app
        self.keyring = keyring
        self.public_paths = public_paths
        self.admin = admin
        self.admin_paths = admin_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and INTERNAL_OWNER in scope:
            scope["state"] = {**scope.get("state", {}), OWNER: scope[INTERNAL_OWNER]}
            await self.app(scope, receive, send)
            return
        if scope["type"] == "http" and get_route_path(scope) in self.admin_paths:
            await self.check_admin(scope, receive, send)
            return
        if scope["type"] != "http" or self.keyring.disabled or self.is_public(scope):
            await self.app(scope, receive, send)
            return
        key = bearer_key(scope)
        if key is None or not self.keyring.accepts(key):
            await invalid_api_key().response()(scope, receive, send)
            return
        scope["state"] = {**scope.get("state", {}), OWNER: _digest(key).hex()}
        await self.app(scope, receive, send)

    async def check_admin(self, scope: Scope, receive: Receive, send: Send) -> None:
        """An admin route: an admin key passes; a client key is 403; anything else 401; no admin key at all, 404."""
        key = bearer_key(scope)
        if self.admin is None or self.admin.empty:
            error = admin_off()
        elif key is not None and self.admin.accepts(key):
            await self.app(scope, receive, send)
            return
        elif key is not None and self.keyring.accepts(key):
            error = admin_only()
        else:
            error = invalid_api_key()
        await error.response()(scope, receive, send)

    def is_public(self, scope: Scope) -> bool:
        """A ``GET`` of one of the exact public paths (mounted at ``/``, so ``path`` is the route's own)."""
        return scope["method"] == "GET" and scope["path"] in self.public_paths
