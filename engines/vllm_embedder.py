"""``VLLMEmbedder``: an embedding model on vLLM's pooling runner (``EmbedEngine``), pooling and normalisation as
the model's config says, Matryoshka sizes if it has them."""

from __future__ import annotations

import contextlib

from engines.vllm_engine import VLLMEngine
from engines.vllm_errors import translate
from openai_routes.core.engine import Embedding, EngineFailedError


class VLLMEmbedder(VLLMEngine):
    """An embedding model: one vector per input."""

    @property
    def dimensions(self) -> int:
        return int(self._llm.model_config.embedding_size)

    def accepts_dimensions(self, dimensions: int) -> bool:
        config = self._llm.model_config
        if dimensions == self.dimensions:
            return True
        if not config.is_matryoshka:
            return False
        sizes = config.matryoshka_dimensions
        return dimensions in sizes if sizes else 1 <= dimensions <= self.dimensions

    async def embed(self, prompt_token_ids: list[int], request_id: str, dimensions: int | None = None) -> Embedding:
        from vllm import PoolingParams
        from vllm.inputs import TokensPrompt
        from vllm.v1.engine.exceptions import EngineDeadError

        prompt = TokensPrompt(prompt_token_ids=prompt_token_ids)
        params = PoolingParams(task="embed", dimensions=None if dimensions == self.dimensions else dimensions)
        try:
            async with contextlib.aclosing(self._llm.encode(prompt, params, request_id)) as outputs:
                async for output in outputs:
                    if output.finished:
                        vector = output.outputs.data.tolist()
                        return Embedding(vector=vector, prompt_tokens=len(output.prompt_token_ids))
        except EngineDeadError as exc:
            raise self._unavailable(exc) from exc
        except Exception as exc:
            raise translate(exc, param="input") from exc
        raise EngineFailedError("the engine returned no embedding")
