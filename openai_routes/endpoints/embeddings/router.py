"""``POST /v1/embeddings``: one vector per input, in input order, as floats or base64 (little-endian float32).

Every input is submitted to the engine at once, so a batch is pooled in the engine's own batches, under the
request's deadline (504, the engine requests aborted). Tokenizing and base64 packing run off the event loop.
"""

from __future__ import annotations

import asyncio
import base64
import struct
import uuid

from fastapi import APIRouter

from openai_routes.core.context import current
from openai_routes.core.engine import EmbedEngine
from openai_routes.core.errors import bad_request
from openai_routes.core.limits import Limits, check_request
from openai_routes.core.metrics import ServerMetrics
from openai_routes.core.registry import ModelRegistry
from openai_routes.endpoints.embeddings.protocol import (
    CreateEmbeddingResponse,
    Embedding,
    EmbeddingCreateParams,
    EmbeddingUsage,
)
from openai_routes.pipeline.deadline import Deadline
from openai_routes.server.json_body import StrictJSONRoute


def encode_base64(vector: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


async def input_tokens(engine: EmbedEngine, item: str | list[int]) -> list[int]:
    """An input as token ids, checked against the model's maximum length (no silent truncation)."""
    if isinstance(item, str) and not item:
        raise bad_request("Inputs must not be empty strings.", "input")
    token_ids = await engine.tokenize(item) if isinstance(item, str) else item
    if len(token_ids) > engine.max_model_len:
        raise bad_request(
            f"An input has {len(token_ids)} tokens; this model's maximum input length is {engine.max_model_len} "
            "tokens. Please shorten the input.",
            "input",
            code="context_length_exceeded",
        )
    return token_ids


def create_router(registry: ModelRegistry, limits: Limits, metrics: ServerMetrics) -> APIRouter:
    router = APIRouter(route_class=StrictJSONRoute)

    @router.post("/embeddings")
    async def create_embeddings(request: EmbeddingCreateParams) -> CreateEmbeddingResponse:
        served, engine = registry.embedder(request.model)
        current().model = served.id
        items = request.inputs()
        check_request(limits, n=1, max_tokens=None, prompts=len(items), prompts_param="input")
        if request.dimensions is not None and not engine.accepts_dimensions(request.dimensions):
            raise bad_request(
                f"The model `{request.model}` cannot output {request.dimensions} dimensions "
                f"(it outputs {engine.dimensions}).",
                "dimensions",
            )
        token_lists = [await input_tokens(engine, item) for item in items]
        request_id = f"embd-{uuid.uuid4().hex}"
        deadline = Deadline(limits.request_timeout)
        try:
            results = await deadline.wait(
                asyncio.gather(
                    *(engine.embed(ids, f"{request_id}-{i}", request.dimensions) for i, ids in enumerate(token_lists))
                )
            )
        finally:
            deadline.cancel()
        vectors = [result.vector for result in results]
        encoded: list[list[float] | str] = list(vectors)
        if request.encoding_format == "base64":
            encoded = list(await asyncio.to_thread(lambda: [encode_base64(vector) for vector in vectors]))
        prompt_tokens = sum(result.prompt_tokens for result in results)
        current().prompt_tokens = prompt_tokens
        metrics.prompt_tokens.labels(model=served.id).inc(prompt_tokens)
        return CreateEmbeddingResponse(
            data=[Embedding(index=i, embedding=embedding) for i, embedding in enumerate(encoded)],
            model=request.model,
            usage=EmbeddingUsage(prompt_tokens=prompt_tokens, total_tokens=prompt_tokens),
        )

    return router
