"""``BatchStore``: batches (``/v1/batches``) as their owners see them, and the claims that share their work between
the workers and replicas of one database (their lines are ``batch_lines.py``'s).

A batch's wire object is kept whole in ``batches.batch`` (its request counts are read live from its lines while it
runs). A worker claims a batch to validate, cancel, expire or finalize it by one ``UPDATE ... WHERE <claimable>
RETURNING`` whose candidate is chosen ``FOR UPDATE SKIP LOCKED`` on PostgreSQL; a claim lasts ``lease`` seconds and
its holder renews it (and its lines' leases) while it works, so a worker that dies (SIGKILL) leaves its claims to
the others once they lapse, and one that stops gives them back at once (``release``).
"""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterable, Collection
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, and_, delete, exists, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from openai_routes.store.batch_lines import LineDraft, line_counts
from openai_routes.store.pages import PageQuery, now, page
from openai_routes.store.tables import BATCH_LINES, BATCHES

BATCH = BATCHES.c
LINE = BATCH_LINES.c
LIVE = ("validating", "in_progress", "finalizing", "cancelling")  # request counts read from the lines
INSERT_PAGE = 1000  # lines inserted at once when a batch starts


@dataclass(frozen=True)
class Claimed:
    """A batch a worker holds, to validate or finalize it."""

    id: str
    owner: str
    status: str
    batch: dict[str, Any]


class UnknownBatchCursor(LookupError):
    """``after`` names no batch of the list."""


class BatchStore:
    def __init__(self, engine: AsyncEngine, *, ttl: int) -> None:
        self.engine = engine
        self.ttl = ttl

    # The API's side: what a key sees of its batches.

    async def create(self, batch: dict[str, Any], owner: str, deadline: int) -> None:
        moment = now()
        values = {
            "id": batch["id"], "owner": owner, "created_at": moment, "updated_at": moment, "status": batch["status"],
            "expires_at": deadline + self.ttl, "deadline": deadline, "lease_until": 0, "batch": batch,
        }  # fmt: skip
        async with self.engine.begin() as connection:
            await connection.execute(insert(BATCHES).values(values))

    async def get(self, batch_id: str, owner: str) -> dict[str, Any] | None:
        async with self.engine.connect() as connection:
            row = (await connection.execute(select(BATCH.batch).where(_visible(batch_id, owner)))).first()
            return None if row is None else await _with_counts(connection, row.batch)

    async def list(self, owner: str, query: PageQuery) -> tuple[list[dict[str, Any]], bool]:
        async with self.engine.connect() as connection:
            found = await page(connection, BATCHES, and_(BATCH.owner == owner, BATCH.expires_at > now()), query)
            if found is None:
                raise UnknownBatchCursor(query.after)
            rows, more = found
            return [await _with_counts(connection, row.batch) for row in rows], more

    async def cancel(self, batch_id: str, owner: str) -> dict[str, Any] | None:
        """``validating`` or ``in_progress`` becomes ``cancelling`` (a worker finalizes it); other states are left
        as they are. The batch as it is then; None when it is not there."""
        moment = now()
        async with self.engine.begin() as connection:
            row = (await connection.execute(select(BATCH.batch).where(_visible(batch_id, owner)))).first()
            if row is None:
                return None
            if row.batch["status"] in ("validating", "in_progress"):
                batch = {**row.batch, "status": "cancelling", "cancelling_at": moment}
                await connection.execute(
                    update(BATCHES)
                    .where(BATCH.id == batch_id, BATCH.status.in_(("validating", "in_progress")))
                    .values(status="cancelling", batch=batch, updated_at=moment, lease_until=0)
                )
        return await self.get(batch_id, owner)

    # The workers' side.

    async def claim_batch(self, worker: str, lease: int) -> Claimed | None:
        """The oldest batch with work for one holder (to validate, to cancel, to expire, or finalize once every
        line is done), no live claim on it: claimed for ``lease`` seconds. A finalized batch reads ``finalizing``."""
        moment = now()
        undone = exists().where(LINE.batch_id == BATCH.id, LINE.status != "done")
        due = or_(
            BATCH.status.in_(("validating", "cancelling", "finalizing")),
            and_(BATCH.status == "in_progress", or_(BATCH.deadline <= moment, ~undone)),
        )
        chosen = (
            select(BATCH.id)
            .where(due, BATCH.lease_until < moment)
            .order_by(BATCH.seq)
            .limit(1)
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        )
        async with self.engine.begin() as connection:
            row = (
                await connection.execute(
                    update(BATCHES)
                    .where(BATCH.id == chosen, BATCH.lease_until < moment)
                    .values(worker=worker, lease_until=moment + lease)
                    .returning(BATCH.id, BATCH.owner, BATCH.status, BATCH.batch)
                )
            ).first()
        return None if row is None else Claimed(row.id, row.owner, row.status, row.batch)

    async def renew(self, worker: str, lease: int) -> None:
        """Extend every claim ``worker`` holds (batches and lines) by ``lease`` seconds from now."""
        until = now() + lease
        async with self.engine.begin() as connection:
            await connection.execute(update(BATCHES).where(BATCH.worker == worker).values(lease_until=until))
            await connection.execute(
                update(BATCH_LINES).where(LINE.worker == worker, LINE.status == "running").values(lease_until=until)
            )

    async def update(self, claimed: Claimed, worker: str, *, release: bool = False, **fields: Any) -> Claimed | None:
        """Set fields of a claimed batch's object (``status`` too), and with ``release`` give the claim back; None
        when the claim was lost meanwhile or the batch changed status under it (then nothing is written)."""
        batch = {**claimed.batch, **fields}
        values: dict[str, Any] = {"status": batch["status"], "batch": batch, "updated_at": now()}
        if release:
            values |= {"worker": None, "lease_until": 0}
        async with self.engine.begin() as connection:
            result = await connection.execute(
                update(BATCHES)
                .where(BATCH.id == claimed.id, BATCH.worker == worker, BATCH.status == claimed.status)
                .values(values)
            )
        return Claimed(claimed.id, claimed.owner, batch["status"], batch) if result.rowcount else None

    async def start(self, claimed: Claimed, worker: str, lines: AsyncIterable[LineDraft], **fields: Any) -> bool:
        """A validated batch's lines stored (inserted a page at a time) and the batch ``in_progress``, in one
        transaction (or neither)."""
        batch = {**claimed.batch, **fields, "status": "in_progress"}
        async with self.engine.begin() as connection:
            moved = await connection.execute(
                update(BATCHES)
                .where(BATCH.id == claimed.id, BATCH.worker == worker, BATCH.status == "validating")
                .values(status="in_progress", batch=batch, updated_at=now(), worker=None, lease_until=0)
            )
            if not moved.rowcount:
                return False
            rows: builtins.list[dict[str, Any]] = []
            async for line in lines:
                rows.append(
                    {"batch_id": claimed.id, "line": line.line, "custom_id": line.custom_id, "model": line.model,
                     "body": line.body, "status": "pending", "lease_until": 0, "attempts": 0, "failed": False}
                )  # fmt: skip
                if len(rows) == INSERT_PAGE:
                    await connection.execute(insert(BATCH_LINES), rows)
                    rows = []
            if rows:
                await connection.execute(insert(BATCH_LINES), rows)
        return True

    async def release(self, worker: str) -> None:
        """Give back every claim of ``worker`` at once (its lines run again elsewhere): a worker that stops."""
        async with self.engine.begin() as connection:
            await connection.execute(update(BATCHES).where(BATCH.worker == worker).values(worker=None, lease_until=0))
            await connection.execute(
                update(BATCH_LINES)
                .where(LINE.worker == worker, LINE.status == "running")
                .values(status="pending", worker=None, lease_until=0)
            )

    async def statuses(self, batch_ids: Collection[str]) -> dict[str, str]:
        """The status of each batch (one that is gone, purged, is missing)."""
        async with self.engine.connect() as connection:
            rows = await connection.execute(select(BATCH.id, BATCH.status).where(BATCH.id.in_(list(batch_ids))))
            return {id: status for id, status in rows.all()}

    async def purge_expired(self, cutoff: int) -> int:
        async with self.engine.begin() as connection:
            result = await connection.execute(
                delete(BATCHES).where(BATCH.expires_at <= cutoff, BATCH.status.not_in(LIVE))
            )
        return result.rowcount


def _visible(batch_id: str, owner: str) -> ColumnElement[bool]:
    return and_(BATCH.id == batch_id, BATCH.owner == owner, BATCH.expires_at > now())


async def _with_counts(connection: Any, batch: dict[str, Any]) -> dict[str, Any]:
    if batch["status"] not in LIVE or batch["status"] == "validating":
        return batch
    return {**batch, "request_counts": await line_counts(connection, batch["id"])}
