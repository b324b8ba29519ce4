"""OpenAI-shaped errors: one exception family, one place that turns every failure into OpenAI's envelope.

Body: ``{"error": {"message", "type", "param", "code"}}`` with all four keys. Validation failures are 400
with ``param`` set and never echo the caller's input; unexpected faults are 500 with the request id only.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from openai_routes.core.context import current
from openai_routes.core.engine import EngineBusyError, EngineInputError, EngineUnavailableError

logger = logging.getLogger(__name__)

INVALID_REQUEST = "invalid_request_error"


class APIError(Exception):
    """An error the client sees, with OpenAI's status, type, code and param."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = INVALID_REQUEST,
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = headers

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def bad_request(message: str, param: str | None, code: str | None = None) -> APIError:
    return APIError(400, message, param=param, code=code)


def model_not_found(model: str) -> APIError:
    return APIError(
        404,
        f"The model `{model}` does not exist or you do not have access to it.",
        code="model_not_found",
        param="model",
    )


def context_length_exceeded(limit: int, prompt_tokens: int, completion_tokens: int, param: str) -> APIError:
    where = "messages" if param == "messages" else "prompt"
    return bad_request(
        f"This model's maximum context length is {limit} tokens. However, you requested "
        f"{prompt_tokens + completion_tokens} tokens ({prompt_tokens} in the {where}, {completion_tokens} in the "
        "completion). Please reduce the length of the messages or completion.",
        param=param,
        code="context_length_exceeded",
    )


def invalid_api_key() -> APIError:
    return APIError(
        401,
        "Incorrect API key provided. Pass a valid key as 'Authorization: Bearer <key>'.",
        code="invalid_api_key",
    )


def service_unavailable(message: str = "The model is not available right now. Retry later.") -> APIError:
    return APIError(503, message, type="server_error", code="service_unavailable", headers={"Retry-After": "5"})


def overloaded(retry_after: int) -> APIError:
    return APIError(
        429,
        "The server is busy: too many requests in flight and in the queue. Retry later.",
        type="server_overloaded",
        code="rate_limit_exceeded",
        headers={"Retry-After": str(retry_after)},
    )


def timed_out(seconds: float) -> APIError:
    return APIError(504, f"The request did not finish within {seconds:.0f} s.", type="server_error", code="timeout")


def too_large(limit: int) -> APIError:
    return APIError(413, f"The request body is larger than {limit} bytes.", code="request_too_large")


def internal_error(request_id: str) -> APIError:
    return APIError(500, f"The server had an internal error (request id {request_id}).", type="server_error")


def as_api_error(exc: BaseException) -> APIError:
    """Any exception as the error the client sees; unexpected ones are logged with the request's id (the one
    in its ``x-request-id`` header and access line; a new one outside a request)."""
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, EngineInputError):
        return bad_request(str(exc), param=exc.param)
    if isinstance(exc, EngineBusyError):
        return service_unavailable("The engine is busy: its queue is full. Retry later.")
    if isinstance(exc, EngineUnavailableError):
        return service_unavailable()
    request_id = current().request_id or f"req-{uuid.uuid4().hex[:16]}"
    logger.error("internal error (request id %s): %s", request_id, type(exc).__name__, exc_info=exc)
    return internal_error(request_id)


_TYPE_TAGS = {"str", "int", "float", "bool", "list", "dict", "none"}


def _is_union_tag(part: object) -> bool:
    """pydantic names the union member an error came from in ``loc`` (``str``, ``list[int]``, ...)."""
    return isinstance(part, str) and (part in _TYPE_TAGS or any(c in part for c in "[(-,"))


def is_discriminator_tag(part: object) -> bool:
    """A discriminated union's member in ``loc``: tagged ``<name>`` (``protocol.responses.InputItem``). It says which
    member failed, which the path without it still does: ``input[0].content[0]``."""
    return isinstance(part, str) and part.startswith("<") and part.endswith(">")


def validation_error(exc: RequestValidationError) -> APIError:
    """A pydantic error as a 400: its field path becomes ``param``; the offending input is never echoed.

    Of several errors the deepest is reported (for a union, the member that got furthest explains best);
    an error inside a union names the top-level field only.
    """
    errors = exc.errors()
    if not errors:
        return bad_request("The request body is invalid.", None)
    first = max(errors, key=lambda error: len(error.get("loc", ())))
    if first.get("type") == "json_invalid":
        return bad_request("The request body is not valid JSON.", None)
    where = list(first.get("loc", ()))
    if where and where[0] in ("body", "query", "path"):  # where FastAPI found it: not part of the param's name
        where = where[1:]
    loc = [part for part in where if not is_discriminator_tag(part)]
    path = [str(part) for part in loc if not _is_union_tag(part)]
    if len(path) < len(loc):
        path = path[:1]
    if not path and first.get("type") in ("model_attributes_type", "dict_type", "model_type"):
        return bad_request("The request body must be a JSON object.", None)
    if not path:
        return bad_request(f"Invalid request: {first.get('msg', 'invalid value')}.", None)
    param = path[0] + "".join(f"[{p}]" if p.isdigit() else f".{p}" for p in path[1:])
    reason = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    return bad_request(f"Invalid value for '{param}': {reason}.", param=param)


_HTTP_STATUS_CODES = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that make every error on ``app`` OpenAI-shaped."""

    @app.exception_handler(Exception)
    async def _any(_: Request, exc: Exception) -> JSONResponse:
        return as_api_error(exc).response()

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return validation_error(exc).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = f"Unknown route: {request.method} {request.url.path}" if exc.status_code == 404 else str(exc.detail)
        return APIError(exc.status_code, message, code=_HTTP_STATUS_CODES.get(exc.status_code)).response()

    for exc_class in (APIError, EngineInputError, EngineUnavailableError):
        app.add_exception_handler(exc_class, _any)
