"""OpenAI's cursor lists as every listing endpoint reads them: the ``limit``/``order``/``after`` query checked
(400s on their param; a route takes it as ``NewestFirst`` or ``OldestFirst``, OpenAI's default order for that list),
and a page of a list held in memory (a response's input items, a completion's messages).
Lists kept in the database are paged there (``store/pages.py``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import Depends, Query

from openai_routes.core.errors import bad_request
from openai_routes.protocol.common import ObjectList
from openai_routes.store.pages import PageQuery


def page_query(limit: int, order: str, after: str | None, max_limit: int = 100) -> PageQuery:
    if not 1 <= limit <= max_limit:
        raise bad_request(f"'limit' must be between 1 and {max_limit}.", param="limit")
    if order not in ("asc", "desc"):
        raise bad_request("'order' must be 'asc' or 'desc'.", param="order")
    direction: Literal["asc", "desc"] = "asc" if order == "asc" else "desc"
    return PageQuery(limit, direction, after)


def page_params(
    default_order: Literal["asc", "desc"], *, default_limit: int = 20, max_limit: int = 100
) -> Callable[..., PageQuery]:
    """The list's query parameters, checked, as a route dependency (OpenAI's limits: 1-100, 20 by default, for most
    lists; the files list takes up to 10,000, and that many by default)."""

    def params(
        limit: int = Query(default=default_limit),
        order: str = Query(default=default_order),
        after: str | None = Query(default=None),
    ) -> PageQuery:
        return page_query(limit, order, after, max_limit)

    return params


NewestFirst = Annotated[PageQuery, Depends(page_params("desc"))]
OldestFirst = Annotated[PageQuery, Depends(page_params("asc"))]


def page_of(items: list[dict[str, Any]], query: PageQuery, owner_name: str) -> ObjectList:
    """A page of ``items`` (oldest first, each with an ``id``); an unknown cursor is a 400 naming ``owner_name``."""
    ordered = items if query.order == "asc" else items[::-1]
    if query.after is not None:
        ids = [item.get("id") for item in ordered]
        if query.after not in ids:
            raise bad_request(f"No item with id '{query.after}' in this {owner_name}.", param="after")
        ordered = ordered[ids.index(query.after) + 1 :]
    return ObjectList.of(ordered[: query.limit], len(ordered) > query.limit)
