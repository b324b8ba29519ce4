"""A batch's input file read and checked as OpenAI checks it before a batch runs: each non-blank line a JSON object
with a ``custom_id`` unique in the file, ``method: "POST"``, the batch's endpoint as ``url`` and an object ``body``.
Any such fault fails the whole batch at validation, each named with its line number (the first ``MAX_ERRORS``).
Whether a body is a request the endpoint accepts is the endpoint's to say when the line runs: a refused body is
that line's error, in the error file, as OpenAI reports it.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from typing import Any

import pydantic_core

from openai_routes.endpoints.batches.protocol import BatchError
from openai_routes.store.batches import LineDraft

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


async def read_lines(
    chunks: AsyncIterable[bytes], endpoint: str, max_lines: int
) -> tuple[list[LineDraft], list[BatchError]]:
    """The file's request lines, or (when any line is faulty) the faults; an empty file is one fault too."""
    drafts: list[LineDraft] = []
    errors: list[BatchError] = []
    seen: set[str] = set()
    number = 0
    async for text in split_lines(chunks):
        number += 1
        if not text.strip():
            continue
        checked = check_line(number, text, endpoint, seen)
        if isinstance(checked, BatchError):
            if len(errors) < MAX_ERRORS:
                errors.append(checked)
        else:
            drafts.append(checked)
    if len(drafts) + len(errors) > max_lines:
        return [], [BatchError(code="too_many_requests", message=f"A batch holds at most {max_lines} requests.")]
    if not drafts and not errors:
        errors.append(BatchError(code="empty_file", message="The input file holds no request line."))
    return drafts, errors
