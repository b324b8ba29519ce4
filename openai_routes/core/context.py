"""The request being served: its id, model and token counts, in a context variable.

``server.access_log.AccessLog`` binds one per HTTP request; the routes and the pipeline fill in the model and the
token counts; ``core.errors`` names the id in a 500.
"""

from __future__ import annotations

from contextvars import ContextVar, Token
from dataclasses import dataclass


@dataclass
class RequestContext:
    request_id: str
    model: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    priority: int = 0  # the engine's scheduling priority where it has one (larger runs later): batch lines' is 1


_current: ContextVar[RequestContext | None] = ContextVar("bento_oai_request", default=None)


def current() -> RequestContext:
    """This request's context (a throwaway one outside a request, e.g. in unit tests of a single route)."""
    return _current.get() or RequestContext(request_id="")


def bind(context: RequestContext) -> Token[RequestContext | None]:
    """Make ``context`` the current request's (reset with the returned token's ``var.reset``)."""
    return _current.set(context)
