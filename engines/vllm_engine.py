"""What the vLLM generation and pooling engines share: one ``AsyncLLM`` and its tokenizer, the model's limits,
health, in-flight count and shutdown (``openai_routes.core.engine.Engine``).

No module of ``engines`` imports vLLM at import time (only inside functions), so ``bentoml build`` and the unit
tests never load it. CPU and GPU run this same code: only the engine arguments in ``configs/*.yaml`` differ.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from engines.vllm_tokenizer import ModelTokenizer
from openai_routes.core.engine import EngineUnavailableError

if TYPE_CHECKING:
    from vllm.v1.engine.async_llm import AsyncLLM

logger = logging.getLogger(__name__)


class VLLMEngine:
    """The base of ``VLLMGenerator`` and ``VLLMEmbedder``."""

    def __init__(self, llm: AsyncLLM) -> None:
        self._llm = llm
        self._tokens = ModelTokenizer(llm.get_tokenizer())

    @property
    def max_model_len(self) -> int:
        return int(self._llm.model_config.max_model_len)

    def is_healthy(self) -> bool:
        return not self._llm.errored

    def num_in_flight(self) -> int:
        return 0 if self._llm.errored else int(self._llm.get_num_unfinished_requests())

    async def tokenize(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return await self._tokens.tokenize(text, add_special_tokens)

    def shutdown(self) -> None:
        self._llm.shutdown()
        self._tokens.shutdown()

    def _unavailable(self, exc: Exception) -> EngineUnavailableError:
        """The error for vLLM's ``EngineDeadError``: the engine core is gone."""
        logger.error("engine failed: %s", type(exc).__name__)
        return EngineUnavailableError(str(type(exc).__name__))
