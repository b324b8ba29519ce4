"""vLLM's exceptions as the engine-side errors of ``openai_routes.core.engine``, translated in one place.

- A validation error is an ``EngineInputError`` (400) with vLLM's ``parameter`` (or the request field its message
  starts with), in plain words: values it echoes (``got -1``, ``[99999]``, ``=16``) and native source locations
  are cut out.
- A schema the grammar backend cannot compile is an ``EngineInputError`` on the request field the schema came
  from (``StructuredOutput.param``): xgrammar's messages carry a C++ source path, which the client never sees.
- Queue overflow (the engine arguments ``max_num_queued_reqs`` / ``max_num_queued_tokens``) is an
  ``EngineBusyError`` (503 with ``Retry-After``).
- A request the engine finished with ``finish_reason: "error"``, or any other failure while it ran, is an
  ``EngineFailedError`` (500): never a normal answer made of the text so far.
"""

from __future__ import annotations

import re
import traceback

from openai_routes.core.engine import EngineBusyError, EngineFailedError, EngineInputError, StructuredOutput

# Request fields vLLM validates under the same name as the OpenAI API; its messages start with the field's name.
REQUEST_FIELDS = frozenset(
    {
        "n", "temperature", "top_p", "top_k", "min_p", "seed", "presence_penalty", "frequency_penalty",
        "repetition_penalty", "logit_bias", "logprobs", "prompt_logprobs", "max_tokens", "min_tokens", "stop",
    }
)  # fmt: skip
_NATIVE_LOCATION = re.compile(r"\[\d{1,2}:\d{2}:\d{2}\]\s*|\S*/\S+\.(?:cc|cpp|cxx|c|h|hpp|py):\d+:?\s*")
_ECHOED_VALUE = re.compile(r",?\s*\bgot\b.*$|\s*\[[^\]]*\]|=[^\s,.]+(?:\.\d+)?")
MAX_REASON = 300


def plain(message: str) -> str:
    """vLLM's message without echoed values or native source locations, as one sentence."""
    text = _NATIVE_LOCATION.sub("", message.splitlines()[0] if message else "")
    text = _ECHOED_VALUE.sub("", text).strip().rstrip(".:, ")
    return (text[:MAX_REASON] or "invalid request") + "."


def _from_structured_outputs(exc: BaseException) -> bool:
    """Whether vLLM raised ``exc`` while checking a request's structured output (its grammar)."""
    return any(
        frame.f_code.co_name == "_validate_structured_outputs" or "/structured_output/" in frame.f_code.co_filename
        for frame, _ in traceback.walk_tb(exc.__traceback__)
    )


def _validation(exc: BaseException) -> BaseException | None:
    from vllm.exceptions import VLLMValidationError
    from vllm.v1.engine.exceptions import EngineGenerateError

    if isinstance(exc, VLLMValidationError):
        return exc
    cause = exc.__cause__ if isinstance(exc, EngineGenerateError) else None
    return cause if isinstance(cause, (VLLMValidationError, ValueError)) else None


def translate(
    exc: Exception, structured: StructuredOutput | None = None, param: str | None = None
) -> EngineInputError | EngineBusyError | EngineFailedError:
    """The engine-side error for ``exc``, raised by vLLM while submitting or running a request."""
    from vllm.exceptions import GracefulHTTPError

    if isinstance(exc, GracefulHTTPError):
        return EngineBusyError("the engine's queue is full")
    validation = _validation(exc)
    if validation is None:
        return EngineFailedError(type(exc).__name__)
    reason = str(validation.args[0]) if validation.args else ""
    if structured is not None and _from_structured_outputs(validation):
        return EngineInputError(
            f"The JSON schema in '{structured.param}' cannot be enforced by constrained decoding: {plain(reason)}",
            structured.param,
        )
    named = getattr(validation, "parameter", None) or reason.split(" ", 1)[0].strip("`'")
    field = named if named in REQUEST_FIELDS else param
    return EngineInputError(f"Invalid value for '{field}': {plain(reason)}" if field else plain(reason), field)
