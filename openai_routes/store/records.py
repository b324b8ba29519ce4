"""What the store keeps of one response (``ResponseRecord``), its JSON text, and the cap on its size.

The JSON text is the same for the size check and for the database (the engine's serializer), so the cap counts
the bytes actually written. PostgreSQL's ``jsonb`` refuses the NUL character, so NULs in strings are stored as
U+FFFD, on SQLite too (one behaviour whatever the backend).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

STATUSES = ("queued", "in_progress", "completed", "incomplete", "failed", "cancelled")
UNFINISHED = ("queued", "in_progress")


@dataclass
class ResponseRecord:
    id: str  # "resp_..."
    owner: str  # hex SHA-256 digest of the API key that made it (never the key); "" when auth is off
    created_at: int  # unix seconds
    status: str  # one of STATUSES
    response: dict[str, Any]  # the whole Response object (what GET returns)
    input_items: list[dict[str, Any]]  # this response's own input items, each with an "id"
    previous_response_id: str | None = None
    expires_at: int = 0  # filled by the store from its ttl when 0


class StoreFullError(ValueError):
    """A record larger than the store's ``max_response_bytes`` (the route answers 400)."""


def dumps(value: Any) -> str:
    """Compact JSON, NUL-free (see the module docstring)."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    if "\\u0000" in text:  # rare: only then walk the value
        text = json.dumps(_without_nul(value), ensure_ascii=False, separators=(",", ":"))
    return text


def _without_nul(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {_without_nul(key): _without_nul(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_without_nul(item) for item in value]
    return value


def check_size(record: ResponseRecord, limit: int) -> None:
    """Raise ``StoreFullError`` when the record's input items and response exceed ``limit`` bytes."""
    size = len(dumps(record.input_items).encode()) + len(dumps(record.response).encode())
    if size > limit:
        raise StoreFullError(
            f"The response and its input items take {size} bytes, more than the {limit} bytes one stored "
            "response may take. Send less input, or set 'store' to false."
        )
