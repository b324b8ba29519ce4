"""A batch's input file read and checked as OpenAI checks it before a batch runs: each non-blank line a JSON object
with a ``custom_id`` unique in the file, ``method: "POST"``, the batch's endpoint as ``url`` and an object ``body``.
Any such fault fails the whole batch at validation, each named with its line number (the first ``MAX_ERRORS``).
The file is read twice, never held whole: once to survey it, once (when it passed) to store its lines.
Whether a body is a request the endpoint accepts is the endpoint's to say when the line runs: a refused body is
that line's error, in the error file, as OpenAI reports it.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pydantic_core

from openai_routes.endpoints.batches.protocol import BatchError
from openai_routes.store.batch_lines import LineDraft

MAX_ERRORS = 100


async def split_lines(chunks: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
    """The file's lines (without their ends), read chunk by chunk."""
    rest = b""
    async for chunk in chunks:
        rest += chunk
        *lines, rest = rest.split(b"\n")
        for line in lines:
            yield line
    if rest:
        yield rest


def check_line(number: int, text: bytes, endpoint: str, seen: set[str]) -> LineDraft | BatchError:
    def error(code: str, message: str, param: str | None = None) -> BatchError:
        return BatchError(code=code, line=number, message=f"Line {number}: {message}", param=param)

    try:
        request: Any = pydantic_core.from_json(text)
    except ValueError:
        return error("invalid_json_line", "not valid JSON.")
    if not isinstance(request, dict):
        return error("invalid_json_line", "not a JSON object.")
    custom_id = request.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        return error("missing_required_parameter", "'custom_id' must be a non-empty string.", "custom_id")
    if custom_id in seen:
        return error("duplicate_custom_id", f"the custom_id '{custom_id}' is used by an earlier line.", "custom_id")
    seen.add(custom_id)
    if request.get("method") != "POST":
        return error("invalid_request", "'method' must be 'POST'.", "method")
    if request.get("url") != endpoint:
        return error("invalid_url", f"'url' must be the batch's endpoint, '{endpoint}'.", "url")
    body = request.get("body")
    if not isinstance(body, dict):
        return error("missing_required_parameter", "'body' must be a JSON object.", "body")
    model = body.get("model")
    return LineDraft(number, custom_id, model if isinstance(model, str) else None, body)


async def request_lines(chunks: AsyncIterable[bytes], endpoint: str) -> AsyncIterator[LineDraft | BatchError]:
    """Each non-blank line of the file, checked: a request line, or its fault."""
    seen: set[str] = set()
    number = 0
    async for text in split_lines(chunks):
        number += 1
        if text.strip():
            yield check_line(number, text, endpoint, seen)


@dataclass
class Survey:
    """What a first read of the file found: its faults (the first ``MAX_ERRORS``), its request lines' count and
    models. The lines themselves are read again when they are stored, so a large file is never held whole."""

    errors: list[BatchError] = field(default_factory=list)
    requests: int = 0
    models: set[str | None] = field(default_factory=set)


async def survey(chunks: AsyncIterable[bytes], endpoint: str, max_lines: int) -> Survey:
    found = Survey()
    async for checked in request_lines(chunks, endpoint):
        found.requests += 1
        if isinstance(checked, BatchError):
            if len(found.errors) < MAX_ERRORS:
                found.errors.append(checked)
        else:
            found.models.add(checked.model)
    if found.requests > max_lines:
        found.errors = [BatchError(code="too_many_requests", message=f"A batch holds at most {max_lines} requests.")]
    elif not found.requests:
        found.errors = [BatchError(code="empty_file", message="The input file holds no request line.")]
    return found


async def drafts(chunks: AsyncIterable[bytes], endpoint: str) -> AsyncIterator[LineDraft]:
    """The request lines of a file that passed the survey."""
    async for checked in request_lines(chunks, endpoint):
        if isinstance(checked, LineDraft):
            yield checked
