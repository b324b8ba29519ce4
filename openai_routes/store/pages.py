"""What the store's tables share: the current second, and cursor pages over a table ordered by ``seq``.

OpenAI's lists page with ``after`` (the id of the last object of the previous page), ``limit`` and ``order``: a page
is read with one row more than asked, whose presence is ``has_more``. A cursor that is not an object of the list
(unknown, another owner's, expired) is ``None`` from ``page``: the route answers 400 on ``after``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import ColumnElement, Row, Table, and_, select
from sqlalchemy.ext.asyncio import AsyncConnection

Order = Literal["asc", "desc"]


def now() -> int:
    """The current second. Times are whole seconds: ``expires_at > now`` holds for the float exactly when it holds
    for its floor, and asyncpg refuses a float for a BIGINT parameter."""
    return math.floor(time.time())


@dataclass(frozen=True)
class PageQuery:
    limit: int = 20
    order: Order = "desc"
    after: str | None = None


async def page(
    connection: AsyncConnection, table: Table, condition: ColumnElement[bool], query: PageQuery
) -> tuple[list[Row[Any]], bool] | None:
    """The rows of ``table`` that meet ``condition``, after the cursor, in ``seq`` order; and whether more follow."""
    columns = table.c
    if query.after is not None:
        cursor = (
            await connection.execute(select(columns.seq).where(and_(condition, columns.id == query.after)))
        ).scalar()
        if cursor is None:
            return None
        condition = and_(condition, columns.seq > cursor if query.order == "asc" else columns.seq < cursor)
    ordering = columns.seq.asc() if query.order == "asc" else columns.seq.desc()
    statement = select(table).where(condition).order_by(ordering).limit(query.limit + 1)
    rows = list((await connection.execute(statement)).all())
    return rows[: query.limit], len(rows) > query.limit
