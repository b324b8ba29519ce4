"""Strict JSON request bodies: pydantic-core's parser instead of ``json.loads``.

It refuses what ``json.loads`` lets through and the engine would choke on (lone surrogates, ``NaN`` and
``Infinity``) and stops deep nesting and oversized numbers early. Every such body is a 400
``The request body is not valid JSON.``, never a 5xx.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any

import pydantic_core
from fastapi import Request, Response
from fastapi.routing import APIRoute


class StrictJSONRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            try:
                self._json = pydantic_core.from_json(body, allow_inf_nan=False)
            except ValueError as exc:
                # FastAPI turns JSONDecodeError into a validation error (400), without echoing the body.
                raise json.JSONDecodeError(str(exc).split(" at line")[0], "", 0) from None
        return self._json


class StrictJSONRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict_handler(request: Request) -> Response:
            return await handler(StrictJSONRequest(request.scope, request.receive))

        return strict_handler
