"""vLLM engines behind ``openai_routes.engine``: one ``AsyncLLM`` per model, generation or pooling.

The only module that imports vLLM (lazily, so ``bentoml build`` and the unit tests never load it). CPU and
GPU run this same code: only the engine arguments in ``configs/*.yaml`` differ.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Sequence
from typing import TYPE_CHECKING, Any

from openai_routes.engine import (
    Embedding,
    EngineInputError,
    EngineUnavailableError,
    GenerationStep,
    OutputDelta,
    ParsedToolCalls,
    SamplingOptions,
    StructuredOutput,
    TokenLogprob,
)

if TYPE_CHECKING:
    from vllm.v1.engine.async_llm import AsyncLLM

logger = logging.getLogger(__name__)

_OPTIONAL_SAMPLING = (
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "repetition_penalty",
    "logit_bias",
    "logprobs",
    "prompt_logprobs",
)


def _client_error(exc: Exception, param: str | None = None) -> EngineInputError | None:
    """vLLM's validation errors (or the ValueError inside an ``EngineGenerateError``) as a client error."""
    from vllm.exceptions import VLLMValidationError
    from vllm.v1.engine.exceptions import EngineGenerateError

    if isinstance(exc, VLLMValidationError):
        return EngineInputError(str(exc).split(" (parameter=")[0], param)
    cause = exc.__cause__ if isinstance(exc, EngineGenerateError) else None
    if isinstance(cause, (VLLMValidationError, ValueError)):
        return EngineInputError(str(cause).split(" (parameter=")[0], param)
    return None


def _structured(structured: StructuredOutput | None, params_class: Any) -> Any:
    if structured is None:
        return None
    if structured.json_object:
        return params_class(json_object=True)
    return params_class(json=structured.json_schema)


def build_engine(model_path: str, engine_args: dict[str, Any], runner: str) -> AsyncLLM:
    """Start an ``AsyncLLM`` (spawns the engine core process; about 30 s on CPU for the default model)."""
    from vllm.config import StructuredOutputsConfig
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.v1.engine.async_llm import AsyncLLM

    engine_args = dict(engine_args)
    if isinstance(engine_args.get("structured_outputs_config"), dict):  # YAML gives a mapping
        engine_args["structured_outputs_config"] = StructuredOutputsConfig(**engine_args["structured_outputs_config"])
    args = AsyncEngineArgs(model=model_path, runner=runner, **engine_args)  # type: ignore[arg-type]
    return AsyncLLM.from_engine_args(args)


class _VLLMEngine:
    """What generation and pooling engines share: limits, health, tokens, shutdown."""

    def __init__(self, llm: AsyncLLM) -> None:
        self._llm = llm
        self._tokenizer = llm.get_tokenizer()
        self._vocab = len(self._tokenizer)

    @property
    def max_model_len(self) -> int:
        return int(self._llm.model_config.max_model_len)

    def is_healthy(self) -> bool:
        return not self._llm.errored

    def num_in_flight(self) -> int:
        return 0 if self._llm.errored else int(self._llm.get_num_unfinished_requests())

    def tokenize(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return list(self._tokenizer.encode(text, add_special_tokens=add_special_tokens))

    def shutdown(self) -> None:
        self._llm.shutdown()

    def _unavailable(self, exc: Exception) -> EngineUnavailableError:
        logger.error("engine failed: %s", type(exc).__name__)
        return EngineUnavailableError(str(type(exc).__name__))


class VLLMGenerator(_VLLMEngine):
    """A chat/completion model on vLLM's generation runner, with its tool-call parser if configured."""

    def __init__(self, llm: AsyncLLM, tool_call_parser: str | None = None) -> None:
        super().__init__(llm)
        self._tool_parser_class: Any = None
        if tool_call_parser:
            from vllm.tool_parsers import ToolParserManager

            self._tool_parser_class = ToolParserManager.get_tool_parser(tool_call_parser)

    @property
    def has_tool_parser(self) -> bool:
        return self._tool_parser_class is not None

    def parse_tool_calls(self, text: str, tools: list[dict[str, Any]]) -> ParsedToolCalls:
        """Run vLLM's parser for this model (it keeps per-request state, so one instance per output)."""
        from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest

        if self._tool_parser_class is None:
            return ParsedToolCalls(content=text, calls=[])
        request = ChatCompletionRequest.model_validate({"model": "-", "messages": [], "tools": tools})
        parser = self._tool_parser_class(self._tokenizer, request.tools)
        info = parser.extract_tool_calls(text, request)
        if not info.tools_called:
            return ParsedToolCalls(content=text, calls=[])
        calls = [(call.function.name, call.function.arguments) for call in info.tool_calls]
        return ParsedToolCalls(content=info.content, calls=calls)

    def render_chat(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None) -> list[int]:
        try:
            conversation: Any = messages
            text = self._tokenizer.apply_chat_template(
                conversation, tools=tools, tokenize=False, add_generation_prompt=True
            )
        except Exception as exc:  # jinja2 raises its own errors for conversations the template rejects
            raise EngineInputError(f"The model's chat template rejected the messages: {exc}", "messages") from exc
        return self.tokenize(str(text), add_special_tokens=False)  # the template wrote them already

    def decode(self, token_ids: Sequence[int]) -> str:
        if any(not 0 <= tid < self._vocab for tid in token_ids):
            raise EngineInputError(f"Token ids must be in [0, {self._vocab}).", "prompt")
        return str(self._tokenizer.decode(list(token_ids)))

    def sampling_params(self, options: SamplingOptions) -> Any:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind, StructuredOutputsParams

        optional = {name: getattr(options, name) for name in _OPTIONAL_SAMPLING}
        if options.n > 1 and options.temperature == 0:
            optional.update(temperature=1.0, top_k=1)  # greedy for every choice; vLLM refuses n > 1 at temperature 0
        try:
            return SamplingParams(
                n=options.n,
                max_tokens=options.max_tokens,
                min_tokens=options.min_tokens,
                stop=list(options.stop),
                ignore_eos=options.ignore_eos,
                output_kind=RequestOutputKind.DELTA,
                structured_outputs=_structured(options.structured, StructuredOutputsParams),
                skip_special_tokens=not self.has_tool_parser,  # parsers look for special tokens like <tool_call>
                **{name: value for name, value in optional.items() if value is not None},
            )
        except Exception as exc:
            if (error := _client_error(exc)) is None:
                raise
            raise error from exc

    async def generate(
        self, prompt_token_ids: list[int], options: SamplingOptions, request_id: str
    ) -> AsyncGenerator[GenerationStep, None]:
        """Stream deltas. vLLM aborts the request itself when this generator is closed or cancelled."""
        from vllm.inputs import TokensPrompt
        from vllm.v1.engine.exceptions import EngineDeadError

        params = self.sampling_params(options)
        k = options.logprobs or 0
        try:
            async for output in self._llm.generate(TokensPrompt(prompt_token_ids=prompt_token_ids), params, request_id):
                if any(choice.finish_reason == "abort" for choice in output.outputs):
                    # Our own aborts close this generator first; an abort seen here came from the engine.
                    raise EngineUnavailableError("the engine aborted the request")
                yield GenerationStep(
                    choices=[
                        self._delta(choice, k if options.logprobs is not None else None) for choice in output.outputs
                    ],
                    prompt_tokens=len(output.prompt_token_ids or prompt_token_ids),
                    cached_tokens=output.num_cached_tokens or 0,
                    prompt_logprobs=self._prompt_logprobs(output.prompt_logprobs, prompt_token_ids, k),
                    finished=output.finished,
                )
        except EngineDeadError as exc:
            raise self._unavailable(exc) from exc
        except Exception as exc:
            if (error := _client_error(exc)) is None:
                raise
            raise error from exc

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
            logprob=max(float(chosen.logprob), -9999.0),
            top=[(tid, self._token_text(tid, lp), max(float(lp.logprob), -9999.0)) for _, tid, lp in ranked],
        )

    def _token_text(self, token_id: int, logprob: Any) -> str:
        text = logprob.decoded_token
        return text if text is not None else self.decode([token_id])


class VLLMEmbedder(_VLLMEngine):
    """An embedding model on vLLM's pooling runner (pooling and normalisation from the model's config)."""

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

        try:
            async for output in self._llm.encode(
                TokensPrompt(prompt_token_ids=prompt_token_ids),
                PoolingParams(task="embed", dimensions=None if dimensions == self.dimensions else dimensions),
                request_id,
            ):
                if output.finished:
                    vector = output.outputs.data.tolist()
                    return Embedding(vector=vector, prompt_tokens=len(output.prompt_token_ids))
        except EngineDeadError as exc:
            raise self._unavailable(exc) from exc
        except Exception as exc:
            if (error := _client_error(exc, "input")) is None:
                raise
            raise error from exc
        raise EngineUnavailableError("the engine returned no embedding")
