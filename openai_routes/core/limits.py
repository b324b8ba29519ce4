"""Limits that depend on configuration or on the model, checked in one place with the right ``param``.

OpenAI's fixed bounds (temperature 0-2, top_logprobs 0-20, ...) are on the protocol schema instead.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

from openai_routes.core.errors import bad_request, context_length_exceeded

MAX_FILE_BYTES = 200 * 1024 * 1024  # OpenAI's cap on a batch input file (200 MB)
MAX_BATCH_LINES = 50_000  # OpenAI's cap on the requests of one batch
FORM_OVERHEAD = 64 * 1024  # what an upload's body holds beyond the file: boundaries, part headers, the other fields


class Limits(BaseModel):
    """Request caps and load limits; configured under ``limits:`` in ``configs/*.yaml``."""

    model_config = ConfigDict(extra="forbid")

    max_n: int = Field(default=8, ge=1, description="Largest 'n' a request may ask for.")
    max_tokens: int | None = Field(
        default=None, ge=1, description="Largest 'max_tokens'; none means the model's context length."
    )
    max_messages: int = Field(default=2048, ge=1, description="Most messages in one chat request.")
    max_prompts: int = Field(default=2048, ge=1, description="Most prompts (or inputs) in one batch request.")
    max_body_bytes: int = Field(default=2 * 1024 * 1024, ge=1024, description="Largest request body (413 beyond).")
    max_in_flight: int = Field(
        default=64,
        ge=1,
        description="Engine sequences running at once, per model: a chat request holds n, a completion prompts x n, "
        "an embeddings request one per input (a larger request takes all of it, alone).",
    )
    max_queued: int = Field(
        default=256,
        ge=0,
        description="Engine sequences waiting for room, per model, first come first served (429 beyond).",
    )
    max_file_bytes: int = Field(
        default=MAX_FILE_BYTES,
        ge=1024,
        le=MAX_FILE_BYTES,
        description="Largest file POST /v1/files takes (413 beyond); at most OpenAI's 200 MB.",
    )
    max_batch_lines: int = Field(
        default=MAX_BATCH_LINES,
        ge=1,
        le=MAX_BATCH_LINES,
        description="Most lines (requests) in a 'batch' file (400 beyond); at most OpenAI's 50,000.",
    )
    retry_after: int = Field(default=1, ge=1, description="Seconds in the Retry-After header of a 429.")
    request_timeout: float = Field(default=600, gt=0, description="Deadline of one request, in seconds (504).")
    shutdown_grace: float = Field(default=30, ge=0, description="Seconds in-flight requests get after SIGTERM.")


class BatchLimits(BaseModel):
    """How batches run (``/v1/batches``); configured under ``batches:`` in ``configs/*.yaml``."""

    model_config = ConfigDict(extra="forbid")

    lines_in_flight: int = Field(
        default=56,
        ge=1,
        description="Batch lines a worker runs at once, at most (56: the default gate's 64 less the reserve).",
    )
    reserve: int = Field(
        default=8,
        ge=0,
        description="Engine sequences per model that batch lines leave to interactive requests: a line starts only "
        "while the model's gate has this much room beyond it and nobody waits.",
    )
    cooldown: float = Field(
        default=2.0,
        ge=0,
        description="Seconds after an interactive request of a model starts or ends during which no new batch line "
        "of that model starts: batch lines drain while interactive traffic lasts, and come back when it pauses.",
    )
    lease: int = Field(
        default=30, ge=2, description="Seconds a worker's claim on a line lasts unrenewed (another takes it after)."
    )
    poll: float = Field(default=0.5, gt=0, description="Seconds between two looks for batch work when idle.")


MAX_IMAGE_BYTES = 20 * 1024 * 1024  # OpenAI's cap on one image (20 MB)
HOST_NAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*")


class MediaLimits(BaseModel):
    """Images in requests (``pipeline/image_fetch.py``); configured under ``media:`` in ``configs/*.yaml``."""

    model_config = ConfigDict(extra="forbid")

    remote_fetch: bool = Field(
        default=True,
        description="Fetch images given by http(s) URL (public addresses only); false: only data URLs and file ids.",
    )
    allowed_domains: list[str] = Field(
        default_factory=list,
        description="Hosts images may be fetched from, each with its subdomains (e.g. 'example.com'); empty: any "
        "public host.",
    )
    max_image_bytes: int = Field(
        default=MAX_IMAGE_BYTES, ge=1024, description="Largest image, fetched or in a data URL (400 beyond)."
    )
    fetch_timeout: float = Field(
        default=10, gt=0, description="Seconds one image's fetch may take in all, redirects included (400 beyond)."
    )
    max_image_pixels: int = Field(
        default=25_000_000,
        ge=1,
        description="Most pixels (width x height) in one decoded image (400 beyond): 25 million takes a 24 MP photo "
        "and holds a decoded RGB image under 75 MB; vision models scale images far below it anyway.",
    )
    max_images_per_request: int = Field(default=8, ge=1, description="Most images in one request (400 beyond).")

    @field_validator("allowed_domains")
    @classmethod
    def _host_names(cls, domains: list[str]) -> list[str]:
        names = [domain.strip().lower().rstrip(".") for domain in domains]
        if bad := [name for name in names if not HOST_NAME.fullmatch(name)]:
            raise ValueError(
                f"'allowed_domains' takes host names like 'example.com' (no scheme, port, path or '*'; subdomains "
                f"are included), not {', '.join(repr(name) for name in bad)}"
            )
        return names


def check_request(
    limits: Limits,
    *,
    n: int,
    max_tokens: int | None,
    messages: int = 0,
    prompts: int = 1,
    prompts_param: str = "prompt",
    max_tokens_param: str = "max_tokens",
) -> None:
    if n > limits.max_n:
        raise bad_request(f"'n' must be at most {limits.max_n}.", param="n")
    if max_tokens is not None and limits.max_tokens is not None and max_tokens > limits.max_tokens:
        raise bad_request(f"'{max_tokens_param}' must be at most {limits.max_tokens}.", param=max_tokens_param)
    if messages > limits.max_messages:
        raise bad_request(f"At most {limits.max_messages} messages are allowed.", param="messages")
    if prompts > limits.max_prompts:
        raise bad_request(f"At most {limits.max_prompts} inputs are allowed in one request.", param=prompts_param)


def completion_budget(
    limits: Limits, *, prompt_tokens: int, requested: int | None, max_model_len: int, param: str
) -> int:
    """Tokens the completion may use: the request's ``max_tokens``, or what the context has left.

    Raises ``context_length_exceeded`` when the prompt plus the requested completion do not fit.
    """
    room = max_model_len - prompt_tokens
    if requested is None:
        if room < 1:
            raise context_length_exceeded(max_model_len, prompt_tokens, 1, param)
        return min(room, limits.max_tokens) if limits.max_tokens else room
    if requested > room:
        raise context_length_exceeded(max_model_len, prompt_tokens, requested, param)
    return requested
