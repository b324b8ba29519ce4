"""What the worker that holds a batch does with it, by its state:

- ``validating``: read its input file (``lines.py``); faults fail it (``errors`` with line numbers), else its lines
  are stored and it is ``in_progress``.
- ``cancelling``: lines not done are closed (``batch_cancelled``), the files written, and it is ``cancelled``.
- ``in_progress`` past its window: ``finalizing``; lines not done are closed (``batch_expired``); ``expired``.
- ``in_progress`` with every line done (or ``finalizing`` left by a worker that died): ``finalizing``, the output
  and error files written, ``completed``, with its usage summed from the output lines.

The output file holds the answered lines (2xx), the error file the others, each in input order; a file with no line
is not made (its id stays null). A step whose claim was lost meanwhile (the batch was cancelled under it) writes
nothing more: the next holder goes on from what is recorded.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from openai_routes.core.limits import BatchLimits
from openai_routes.core.metrics import ServerMetrics
from openai_routes.endpoints.batches.lines import drafts, survey
from openai_routes.endpoints.batches.protocol import BatchError
from openai_routes.store.batches import Claimed
from openai_routes.store.pages import now
from openai_routes.store.state import StateStore

logger = logging.getLogger(__name__)

CANCELLED = {"code": "batch_cancelled", "message": "This request was not run: the batch was cancelled."}
EXPIRED = {
    "code": "batch_expired",
    "message": "This request could not be executed before the completion window expired.",
}
CHUNK_BYTES = 1 << 20


class Finalizer:
    def __init__(self, state: StateStore, worker: str, limits: BatchLimits, metrics: ServerMetrics) -> None:
        self.state = state
        self.store = state.batches
        self.worker = worker
        self.limits = limits
        self.metrics = metrics

    async def handle(self, claimed: Claimed) -> None:
        if claimed.status == "validating":
            await self.validate(claimed)
        elif claimed.status == "cancelling":
            await self.close(claimed, CANCELLED, "cancelled", "cancelled_at")
        elif claimed.status == "in_progress" and claimed.batch["expires_at"] <= now():
            finalizing = await self.store.update(claimed, self.worker, status="finalizing", finalizing_at=now())
            if finalizing is not None:
                await self.close(finalizing, EXPIRED, "expired", "expired_at")
        else:
            finalizing = claimed
            if claimed.status == "in_progress":
                finalizing = await self.store.update(claimed, self.worker, status="finalizing", finalizing_at=now())
            if finalizing is not None:
                await self.finish(finalizing, "completed", "completed_at")

    async def validate(self, claimed: Claimed) -> None:
        batch = claimed.batch
        found = await self.state.files.get(batch["input_file_id"], claimed.owner)
        if found is None:
            gone = BatchError(code="file_not_found", param="input_file_id",
                              message=f"The input file '{batch['input_file_id']}' is gone.")  # fmt: skip
            errors = [gone]
        else:
            content = self.state.files.content(found.id, claimed.owner)
            surveyed = await survey(content, batch["endpoint"], self.state.files.max_batch_lines)
            errors = surveyed.errors
        if errors or found is None:
            await self.store.update(
                claimed, self.worker, release=True, status="failed", failed_at=now(),
                errors={"object": "list", "data": [error.model_dump() for error in errors]},
            )  # fmt: skip
            return
        models = surveyed.models
        model = models.pop() if len(models) == 1 else None
        counts = {"total": surveyed.requests, "completed": 0, "failed": 0}
        lines = drafts(self.state.files.content(found.id, claimed.owner), batch["endpoint"])
        await self.store.start(claimed, self.worker, lines, in_progress_at=now(), model=model, request_counts=counts)

    async def close(self, claimed: Claimed, error: dict[str, str], status: str, stamp: str) -> None:
        closed = await self.state.batch_lines.close_lines(claimed.id, error)
        if closed:
            self.metrics.batch_lines.labels(status=status).inc(closed)
        await self.finish(claimed, status, stamp)

    async def finish(self, claimed: Claimed, status: str, stamp: str) -> None:
        usage = Usage()
        output = await self.write(claimed, failed=False, usage=usage)
        errors = await self.write(claimed, failed=True, usage=None)
        await self.store.update(
            claimed, self.worker, release=True, status=status, output_file_id=output, error_file_id=errors,
            request_counts=await self.state.batch_lines.counts(claimed.id), usage=usage.wire(), **{stamp: now()},
        )  # fmt: skip

    async def write(self, claimed: Claimed, failed: bool, usage: Usage | None) -> str | None:
        """The output (or error) file of the batch; None when it would be empty."""
        results = self.state.batch_lines.results(claimed.id, failed)
        first = await anext(results, None)
        if first is None:
            return None

        async def chunks() -> AsyncIterator[bytes]:
            buffer = bytearray()
            async for result in _chain(first, results):
                if usage is not None:
                    usage.add(result)
                buffer += _jsonl(result)
                if len(buffer) >= CHUNK_BYTES:
                    yield bytes(buffer)
                    buffer.clear()
            if buffer:
                yield bytes(buffer)

        expires_after = claimed.batch.get("output_expires_after")
        expires_at = now() + expires_after["seconds"] if expires_after else None
        name = f"{claimed.id}_{'error' if failed else 'output'}.jsonl"
        record = await self.state.files.create(claimed.owner, "batch_output", name, chunks(), expires_at=expires_at)
        return record.id


async def _chain(first: dict[str, Any], rest: AsyncIterator[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
    yield first
    async for item in rest:
        yield item


def _jsonl(result: dict[str, Any]) -> bytes:
    return json.dumps(result, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


class Usage:
    """The batch's usage: the output lines' usage summed, in the Responses API's names whatever the endpoint."""

    def __init__(self) -> None:
        self.input = self.output = self.cached = self.reasoning = 0

    def add(self, result: dict[str, Any]) -> None:
        body = (result.get("response") or {}).get("body") or {}
        usage = body.get("usage") if isinstance(body, dict) else None
        if not isinstance(usage, dict):
            return
        self.input += usage.get("input_tokens", usage.get("prompt_tokens", 0)) or 0
        self.output += usage.get("output_tokens", usage.get("completion_tokens", 0)) or 0
        inputs = usage.get("input_tokens_details") or usage.get("prompt_tokens_details") or {}
        outputs = usage.get("output_tokens_details") or usage.get("completion_tokens_details") or {}
        self.cached += inputs.get("cached_tokens", 0) or 0
        self.reasoning += outputs.get("reasoning_tokens", 0) or 0

    def wire(self) -> dict[str, Any]:
        return {
            "input_tokens": self.input, "input_tokens_details": {"cached_tokens": self.cached},
            "output_tokens": self.output, "output_tokens_details": {"reasoning_tokens": self.reasoning},
            "total_tokens": self.input + self.output,
        }  # fmt: skip
