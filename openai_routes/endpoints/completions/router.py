"""``POST /v1/completions``: plain text completion of one or several prompts (text or token ids).

Every prompt is submitted to the engine at once by one ``pipeline.run.GenerationRun`` (their prefill runs batched
under one deadline); ``wire.CompletionWire`` adds the prompt echo and the legacy ``logprobs`` shape. A reasoning
model's reasoning stays in the text, as vLLM's completions leave it, and is counted in usage.
"""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from openai_routes.core.context import current
from openai_routes.core.limits import Limits, check_request, completion_budget
from openai_routes.core.registry import ModelRegistry
from openai_routes.endpoints.answer import answer
from openai_routes.endpoints.completions.protocol import DEFAULT_MAX_TOKENS, Completion, CompletionRequest
from openai_routes.endpoints.completions.wire import CompletionWire
from openai_routes.pipeline.prepare import prompt_input
from openai_routes.pipeline.run import RAW_TEXT, EngineInput, GenerationRun, RunSettings
from openai_routes.server.json_body import StrictJSONRoute


def create_router(registry: ModelRegistry, limits: Limits, runs: RunSettings) -> APIRouter:
    router = APIRouter(route_class=StrictJSONRoute)

    @router.post("/completions", response_model=None)
    async def create_completion(request: CompletionRequest) -> Completion | Response:
        served, engine = registry.generator(request.model)
        current().model = served.id
        raw = request.prompts()
        requested = request.max_tokens if "max_tokens" in request.model_fields_set else None
        check_request(limits, n=request.n, max_tokens=requested, prompts=len(raw))
        prompts = [await prompt_input(engine, p) for p in raw]
        default = min(DEFAULT_MAX_TOKENS, limits.max_tokens or DEFAULT_MAX_TOKENS)
        inputs = []
        for prompt in prompts:
            budget = completion_budget(
                limits,
                prompt_tokens=len(prompt.token_ids),
                requested=requested if requested is not None else default,
                max_model_len=engine.max_model_len,
                param="prompt",
            )
            options = request.sampling_options(budget, request.logprobs, request.echo)
            inputs.append(EngineInput(prompt.token_ids, options))
        id = CompletionWire.new_id()
        run = GenerationRun(engine, served.id, inputs, RAW_TEXT, id, runs)
        return await answer(run, CompletionWire(request, run, prompts, id), request.stream)

    return router
