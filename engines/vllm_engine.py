"""vLLM engines behind ``openai_routes.core.engine``: one ``AsyncLLM`` per model, generation or pooling.

The only module that imports vLLM (lazily, so ``bentoml build`` and the unit tests never load it). CPU and
GPU run this same code: only the engine arguments in ``configs/*.yaml`` differ.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

from engines.generation_defaults import resolve_defaults, with_defaults
from engines.vllm_errors import translate
from engines.vllm_output import ModelParsers
from openai_routes.core.engine import (
    Embedding,
    EngineFailedError,
    EngineInputError,
    EngineUnavailableError,
    GenerationStep,
    ModelCapabilities,
    OutputDelta,
    OutputReader,
    SamplingOptions,
    StructuredOutput,
    TokenLogprob,
)

if TYPE_CHECKING:
    from vllm.v1.engine.async_llm import AsyncLLM

logger = logging.getLogger(__name__)
T = TypeVar("T")

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


def _structured(structured: StructuredOutput | None, params_class: Any) -> Any:
    if structured is None:
        return None
    if structured.json_object:
        return params_class(json_object=True)
    if structured.structural_tag is not None:
        return params_class(structural_tag=json.dumps(structured.structural_tag))
    return params_class(json=structured.json_schema)


def build_engine(
    model_path: str, engine_args: dict[str, Any], runner: str, reasoning_parser: str | None = None
) -> AsyncLLM:
    """Start an ``AsyncLLM`` (spawns the engine core process; about 30 s on CPU for the default model). With a
    reasoning parser, the grammar of a constrained format starts after the reasoning, as ``vllm serve
    --reasoning-parser`` sets it."""
    from vllm.config import StructuredOutputsConfig
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.v1.engine.async_llm import AsyncLLM

    engine_args = dict(engine_args)
    structured = dict(engine_args.get("structured_outputs_config") or {})  # YAML gives a mapping
    if reasoning_parser:
        structured.setdefault("reasoning_parser", reasoning_parser)
    if structured:
        engine_args["structured_outputs_config"] = StructuredOutputsConfig(**structured)
    args = AsyncEngineArgs(model=model_path, runner=runner, **engine_args)  # type: ignore[arg-type]
    return AsyncLLM.from_engine_args(args)


class _VLLMEngine:
    """What generation and pooling engines share: limits, health, tokens, shutdown."""

    def __init__(self, llm: AsyncLLM) -> None:
        self._llm = llm
        self._tokenizer = llm.get_tokenizer()
        self._vocab = len(self._tokenizer)
        # Templating and tokenizing take milliseconds for long inputs: they run here, off the event loop
        # that streams every other request's tokens. One thread, as vLLM does: HF tokenizers are not re-entrant.
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tokenizer")

    async def _off_loop(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(
            self._pool, functools.partial(function, *args, **kwargs)
        )

    @property
    def max_model_len(self) -> int:
        return int(self._llm.model_config.max_model_len)

    def is_healthy(self) -> bool:
        return not self._llm.errored

    def num_in_flight(self) -> int:
        return 0 if self._llm.errored else int(self._llm.get_num_unfinished_requests())

    def _encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return list(self._tokenizer.encode(text, add_special_tokens=add_special_tokens))

    async def tokenize(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return await self._off_loop(self._encode, text, add_special_tokens)

    def shutdown(self) -> None:
        self._llm.shutdown()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _unavailable(self, exc: Exception) -> EngineUnavailableError:
        logger.error("engine failed: %s", type(exc).__name__)
        return EngineUnavailableError(str(type(exc).__name__))


class VLLMGenerator(_VLLMEngine):
    """A chat/completion model on vLLM's generation runner, with its tool-call and reasoning parsers if configured."""

    def __init__(
        self,
        llm: AsyncLLM,
        tool_call_parser: str | None = None,
        reasoning_parser: str | None = None,
        chat_template: str | None = None,
        generation_defaults: Mapping[str, float | int] | None = None,
    ) -> None:
        super().__init__(llm)
        self._defaults = self._generation_defaults(generation_defaults)
        self._chat_template = chat_template
        self._parsers = ModelParsers(self._tokenizer, tool_call_parser, reasoning_parser)
        renders_tools = self._template_renders_tools()
        if not renders_tools:
            logger.info("the chat template ignores tools: tools go in a system preamble")
        self.capabilities = ModelCapabilities(
            tool_parser=self._parsers.native_tools,
            reasoning_parser=self._parsers.reasoning,
            renders_tools=renders_tools,
        )

    def _template_renders_tools(self) -> bool:
        name = "bento_oai_probe_tool"
        probe = {"type": "function", "function": {"name": name, "parameters": {"type": "object", "properties": {}}}}
        try:
            return name in self._template([{"role": "user", "content": "hi"}], [probe], None)
        except Exception:  # a template that refuses tools does not render them
            return False

    def count_reasoning_tokens(self, token_ids: Sequence[int]) -> int:
        return self._parsers.count_reasoning_tokens(token_ids)

    def output_reader(
        self,
        tools: list[dict[str, Any]] | None,
        tool_choice: str | dict[str, Any],
        prompt_token_ids: Sequence[int],
    ) -> OutputReader:
        return self._parsers.reader(tools, tool_choice, prompt_token_ids)

    async def render_chat(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None = None,
        template_kwargs: dict[str, Any] | None = None,
    ) -> list[int]:
        return await self._off_loop(self._render_chat, messages, tools, template_kwargs)

    def _template(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None, kwargs: dict[str, Any] | None
    ) -> str:
        conversation: Any = messages
        text = self._tokenizer.apply_chat_template(
            conversation,
            tools=tools,
            chat_template=self._chat_template,
            tokenize=False,
            add_generation_prompt=True,
            **(kwargs or {}),
        )
        return str(text)

    def _render_chat(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None, kwargs: dict[str, Any] | None
    ) -> list[int]:
        try:
            text = self._template(messages, tools, kwargs)
        except Exception as exc:  # jinja2 raises its own errors for conversations the template rejects
            raise EngineInputError(f"The model's chat template rejected the messages: {exc}", "messages") from exc
        return self._encode(text, add_special_tokens=False)  # the template wrote them already

    async def decode(self, token_ids: Sequence[int]) -> str:
        return await self._off_loop(self._decode, token_ids)

    def _decode(self, token_ids: Sequence[int]) -> str:
        if any(not 0 <= tid < self._vocab for tid in token_ids):
            raise EngineInputError(f"Token ids must be in [0, {self._vocab}).", "prompt")
        return str(self._tokenizer.decode(list(token_ids)))

    def _generation_defaults(self, overrides: Mapping[str, float | int] | None) -> dict[str, Any]:
        """The model's ``generation_config.json`` sampling fields under the config's overrides, checked once here
        so that a bad value fails the start, not every request."""
        from vllm import SamplingParams

        defaults = resolve_defaults(self._llm.model_config.get_diff_sampling_param(), overrides)
        try:
            SamplingParams(**defaults)
        except Exception as exc:
            raise ValueError(f"invalid generation defaults {defaults}: {exc}") from exc
        logger.info("sampling defaults for requests that omit them: %s", defaults or "vLLM's neutral ones")
        return defaults

    def sampling_params(self, options: SamplingOptions) -> Any:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind, StructuredOutputsParams

        options = with_defaults(options, self._defaults)  # what the request left unset, as `vllm serve` does
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
                skip_special_tokens=self._parsers.skip_special_tokens(options.parsed_tools),
                **{name: value for name, value in optional.items() if value is not None},
            )
        except Exception as exc:
            raise translate(exc, options.structured) from exc

    async def generate(
        self, prompt_token_ids: list[int], options: SamplingOptions, request_id: str
    ) -> AsyncGenerator[GenerationStep, None]:
        """Stream deltas. Closing or cancelling this generator closes vLLM's explicitly (``aclosing``), which
        aborts the request in the engine."""
        from vllm.inputs import TokensPrompt
        from vllm.v1.engine.exceptions import EngineDeadError

        params = self.sampling_params(options)
        k = options.logprobs or 0
        prompt = TokensPrompt(prompt_token_ids=prompt_token_ids)
        try:
            async with contextlib.aclosing(self._llm.generate(prompt, params, request_id)) as outputs:
                async for output in outputs:
                    yield self._step(output, prompt_token_ids, k if options.logprobs is not None else None)
        except EngineDeadError as exc:
            raise self._unavailable(exc) from exc
        except (EngineUnavailableError, EngineFailedError):
            raise  # ours, from _step
        except Exception as exc:
            error = translate(exc, options.structured)
            if isinstance(error, EngineFailedError):  # vLLM may have registered the request before failing
                await self._llm.abort(request_id)
            raise error from exc

    def _step(self, output: Any, prompt_token_ids: list[int], k: int | None) -> GenerationStep:
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
            logprob=max(float(chosen.logprob), -9999.0),
            top=[(tid, self._token_text(tid, lp), max(float(lp.logprob), -9999.0)) for _, tid, lp in ranked],
        )

    def _token_text(self, token_id: int, logprob: Any) -> str:
        text = logprob.decoded_token
        return text if text is not None else self._decode([token_id])


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
