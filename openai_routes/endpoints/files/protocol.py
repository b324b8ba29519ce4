"""The Files API's objects and the upload's form (``/v1/files``).

Reference: https://platform.openai.com/docs/api-reference/files (the SDK's ``types/file_object.py``,
``file_purpose.py``, ``file_deleted.py``, ``file_create_params.py``). The upload is ``multipart/form-data``, read
by the router (``UPLOAD_BODY`` describes it in the OpenAPI schema): ``file``, ``purpose``, and optionally
``expires_after[anchor]`` (``created_at``) with ``expires_after[seconds]`` (one hour to 30 days).
"""

from __future__ import annotations

from typing import Any, Literal, get_args

from pydantic import BaseModel

from openai_routes.core.errors import bad_request

FilePurpose = Literal["assistants", "batch", "fine-tune", "vision", "user_data", "evals"]  # what a client uploads
PURPOSES: tuple[str, ...] = get_args(FilePurpose)
EXPIRES_AFTER_SECONDS = (3600, 2_592_000)  # OpenAI's bounds: one hour to 30 days

UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file", "purpose"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "purpose": {"type": "string", "enum": list(PURPOSES)},
                        "expires_after[anchor]": {"type": "string", "enum": ["created_at"]},
                        "expires_after[seconds]": {
                            "type": "integer",
                            "minimum": EXPIRES_AFTER_SECONDS[0],
                            "maximum": EXPIRES_AFTER_SECONDS[1],
                        },
                    },
                }
            }
        },
    }
}


class FileObject(BaseModel):
    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    expires_at: int | None
    filename: str
    purpose: str  # one of PURPOSES, or what the service writes ("batch_output")
    status: Literal["uploaded", "processed", "error"] = "processed"
    status_details: str | None = None


class FileDeleted(BaseModel):
    id: str
    object: Literal["file"] = "file"
    deleted: bool = True


def upload_purpose(value: object) -> str:
    if value is None:
        raise bad_request("'purpose' is required.", param="purpose")
    if not isinstance(value, str) or value not in PURPOSES:
        raise bad_request(f"'purpose' must be one of {', '.join(PURPOSES)}.", param="purpose")
    return value


def expires_after(anchor: object, seconds: object) -> int | None:
    """The seconds of ``expires_after`` (None when not given), checked as OpenAI does."""
    if anchor is None and seconds is None:
        return None
    if anchor != "created_at":
        raise bad_request("'expires_after[anchor]' must be 'created_at'.", param="expires_after.anchor")
    low, high = EXPIRES_AFTER_SECONDS
    try:
        value = int(seconds) if isinstance(seconds, str) and seconds.strip().isdigit() else None
    except ValueError:
        value = None
    if value is None or not low <= value <= high:
        raise bad_request(
            f"'expires_after[seconds]' must be an integer between {low} and {high}.", param="expires_after.seconds"
        )
    return value
