"""vLLM's ``RequestOutput`` (``DELTA`` kind) as the engine port's ``GenerationStep``: each choice's new text and
tokens as an ``OutputDelta``, its logprobs and the prompt's as ``TokenLogprob``, and a request the engine itself
aborted or failed as an error, never a normal end."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from openai_routes.core.engine import (
    EngineFailedError,
    EngineUnavailableError,
    GenerationStep,
    OutputDelta,
    TokenLogprob,
)

MIN_LOGPROB = -9999.0  # what -inf becomes: JSON has no infinity


class StepReader:
    """Reads one model's outputs; ``decode`` gives a token's text when vLLM did not decode it."""

    def __init__(self, decode: Callable[[Sequence[int]], str]) -> None:
        self._decode = decode

    def step(self, output: Any, prompt_token_ids: list[int], k: int | None) -> GenerationStep:
        """One step of a request; ``k`` is its ``logprobs`` (top alternatives per token), None for no logprobs."""
        finishes = {choice.finish_reason for choice in output.outputs}
        if "abort" in finishes:  # our own aborts close the generator first: this one came from the engine
            raise EngineUnavailableError("the engine aborted the request")
        if "error" in finishes:  # vLLM's request-level internal error: the text so far is no answer
            raise EngineFailedError("the engine finished the request with an error")
        return GenerationStep(
            choices=[self._delta(choice, k) for choice in output.outputs],
            prompt_tokens=len(output.prompt_token_ids or prompt_token_ids),
            cached_tokens=output.num_cached_tokens or 0,
            prompt_logprobs=self._prompt_logprobs(output.prompt_logprobs, prompt_token_ids, k or 0),
            finished=output.finished,
        )

    def _delta(self, choice: Any, k: int | None) -> OutputDelta:
        logprobs = None
        if k is not None and choice.logprobs is not None:
            logprobs = [
                self._logprob(tid, entry, k) for tid, entry in zip(choice.token_ids, choice.logprobs, strict=True)
            ]
        finish = choice.finish_reason
        return OutputDelta(
            index=choice.index,
            text=choice.text,
            token_ids=choice.token_ids,
            logprobs=logprobs,
            finish_reason=None if finish is None else ("length" if finish == "length" else "stop"),
        )

    def _prompt_logprobs(
        self, entries: Sequence[dict[int, Any] | None] | None, prompt_token_ids: list[int], k: int
    ) -> list[TokenLogprob | None] | None:
        if not entries:  # only the first step carries them
            return None
        return [
            None if entry is None else self._logprob(tid, entry, k)
            for tid, entry in zip(prompt_token_ids, entries, strict=True)
        ]

    def _logprob(self, token_id: int, entry: dict[int, Any], k: int) -> TokenLogprob:
        chosen = entry[token_id]
        ranked = sorted((lp.rank, tid, lp) for tid, lp in entry.items() if lp.rank is not None and lp.rank <= k)
        return TokenLogprob(
            token_id=token_id,
            token=self._token_text(token_id, chosen),
            logprob=max(float(chosen.logprob), MIN_LOGPROB),
            top=[(tid, self._token_text(tid, lp), max(float(lp.logprob), MIN_LOGPROB)) for _, tid, lp in ranked],
        )

    def _token_text(self, token_id: int, logprob: Any) -> str:
        text = logprob.decoded_token
        return text if text is not None else self._decode([token_id])
