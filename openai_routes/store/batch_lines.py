"""``BatchLines``: the request lines of the batches (``batch_lines``), as workers claim, run and close them.

Lines are claimed with leases, by one ``UPDATE ... WHERE <claimable> RETURNING`` whose candidates are chosen
``FOR UPDATE SKIP LOCKED`` on PostgreSQL (two replicas never take the same line; SQLite has one writer at a time):
pending lines of running batches, or lines whose holder's lease lapsed (it died). A line's result is written only by
the worker that holds it (``worker`` and ``status = running`` in the condition): a line taken over, cancelled or
expired meanwhile keeps the one result it has. ``store/batches.py`` holds the batches themselves.
"""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Row, and_, case, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from openai_routes.store.pages import now
from openai_routes.store.tables import BATCH_LINES, BATCHES

BATCH = BATCHES.c
LINE = BATCH_LINES.c
RESULT_PAGE = 500  # lines read at once when the result files are written


@dataclass(frozen=True)
class LineDraft:
    line: int  # 1-based, in the input file
    custom_id: str
    model: str | None
    body: dict[str, Any]


@dataclass(frozen=True)
class ClaimedLine:
    seq: int
    batch_id: str
    owner: str
    endpoint: str
    custom_id: str
    body: dict[str, Any]
    attempts: int  # this claim included


class BatchLines:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def claim_lines(
        self, worker: str, lease: int, limit: int, full: Collection[str]
    ) -> builtins.list[ClaimedLine]:
        """Up to ``limit`` lines of ``in_progress`` batches (oldest batch first, in line order), pending or left by a
        worker whose lease lapsed, naming none of the ``full`` models."""
        moment = now()
        free = or_(LINE.status == "pending", and_(LINE.status == "running", LINE.lease_until < moment))
        running = select(BATCH.id).where(BATCH.status == "in_progress", BATCH.deadline > moment)
        condition = and_(free, LINE.batch_id.in_(running))
        if full:
            condition = and_(condition, or_(LINE.model.is_(None), LINE.model.not_in(list(full))))
        chosen = select(LINE.seq).where(condition).order_by(LINE.seq).limit(limit).with_for_update(skip_locked=True)
        async with self.engine.begin() as connection:
            rows = (
                await connection.execute(
                    update(BATCH_LINES)
                    .where(LINE.seq.in_(chosen), free)
                    .values(status="running", worker=worker, lease_until=moment + lease, attempts=LINE.attempts + 1)
                    .returning(LINE.seq, LINE.batch_id, LINE.custom_id, LINE.body, LINE.attempts)
                )
            ).all()
            if not rows:
                return []
            batches = {
                id: (owner, batch["endpoint"])
                for id, owner, batch in await connection.execute(
                    select(BATCH.id, BATCH.owner, BATCH.batch).where(BATCH.id.in_({row.batch_id for row in rows}))
                )
            }
        return sorted(
            (ClaimedLine(row.seq, row.batch_id, *batches[row.batch_id], row.custom_id, row.body, row.attempts)
             for row in rows),
            key=lambda line: line.seq,
        )  # fmt: skip

    async def finish_line(self, line: ClaimedLine, worker: str, result: dict[str, Any], failed: bool) -> bool:
        """Record a line's output (or error) line; False (nothing written) when ``worker`` no longer holds it."""
        async with self.engine.begin() as connection:
            written = await connection.execute(
                update(BATCH_LINES)
                .where(LINE.seq == line.seq, LINE.worker == worker, LINE.status == "running")
                .values(status="done", result=result, failed=failed)  # the worker stays: who ran it
            )
        return written.rowcount > 0

    async def put_back(self, line: ClaimedLine, worker: str) -> None:
        """A line that could not run now (the server drains) is pending again, for any worker."""
        async with self.engine.begin() as connection:
            await connection.execute(
                update(BATCH_LINES)
                .where(LINE.seq == line.seq, LINE.worker == worker, LINE.status == "running")
                .values(status="pending", worker=None, lease_until=0, attempts=LINE.attempts - 1)
            )

    async def close_lines(self, batch_id: str, error: dict[str, str]) -> int:
        """Every line of the batch not done yet is done, failed with ``error`` (expired or cancelled); how many."""
        async with self.engine.begin() as connection:
            undone = (
                await connection.execute(
                    select(LINE.seq, LINE.custom_id).where(LINE.batch_id == batch_id, LINE.status != "done")
                )
            ).all()
            for seq, custom_id in undone:
                result = {"custom_id": custom_id, "response": None, "error": error}
                await connection.execute(
                    update(BATCH_LINES)
                    .where(LINE.seq == seq, LINE.status != "done")
                    .values(status="done", failed=True, worker=None, result=result)
                )
        return len(undone)

    async def results(self, batch_id: str, failed: bool) -> AsyncIterator[dict[str, Any]]:
        """The output (or error) lines of a batch, in input order, read a page at a time."""
        after = 0
        while True:
            async with self.engine.connect() as connection:
                rows = (
                    await connection.execute(
                        select(LINE.seq, LINE.result)
                        .where(
                            LINE.batch_id == batch_id, LINE.status == "done", LINE.failed == failed, LINE.seq > after
                        )
                        .order_by(LINE.seq)
                        .limit(RESULT_PAGE)
                    )
                ).all()
            for row in rows:
                yield row.result
            if len(rows) < RESULT_PAGE:
                return
            after = rows[-1].seq

    async def counts(self, batch_id: str) -> dict[str, int]:
        async with self.engine.connect() as connection:
            return await line_counts(connection, batch_id)


async def line_counts(connection: AsyncConnection, batch_id: str) -> dict[str, int]:
    failed = case((and_(LINE.status == "done", LINE.failed), 1), else_=0)
    completed = case((and_(LINE.status == "done", ~LINE.failed), 1), else_=0)
    row: Row[Any] = (
        await connection.execute(
            select(func.count(), func.coalesce(func.sum(completed), 0), func.coalesce(func.sum(failed), 0)).where(
                LINE.batch_id == batch_id
            )
        )
    ).one()
    total, done, failures = (int(value) for value in row)
    return {"total": total, "completed": done, "failed": failures}
