"""``VLLMGenerator``: a chat/completion model on vLLM's generation runner (``GenerateEngine``).

It composes the parts resolved once when the model loads: its chat template (``vllm_tokenizer``), its sampling
defaults (``vllm_sampling``), its output parsers (``vllm_output``), and the reading of vLLM's outputs into steps
(``vllm_steps``); what it can do beyond plain text is its ``ModelCapabilities``. ``with_adapter`` is the same model
answering through a LoRA adapter: a view that shares the engine and every part, and adds vLLM's ``LoRARequest`` to
each engine request.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from engines.vllm_engine import VLLMEngine
from engines.vllm_errors import translate
from engines.vllm_images import ModelImages
from engines.vllm_output import ModelParsers
from engines.vllm_sampling import checked_defaults, sampling_params
from engines.vllm_steps import StepReader
from engines.vllm_tokenizer import ChatTemplate
from openai_routes.core.context import current
from openai_routes.core.engine import (
    EngineFailedError,
    EngineUnavailableError,
    GenerationStep,
    ImageInput,
    ModelCapabilities,
    OutputReader,
    RenderedPrompt,
    SamplingOptions,
)

if TYPE_CHECKING:
    from vllm.lora.request import LoRARequest
    from vllm.v1.engine.async_llm import AsyncLLM

logger = logging.getLogger(__name__)


class VLLMGenerator(VLLMEngine):
    """A generating model, with its tool-call and reasoning parsers if configured."""

    def __init__(
        self,
        llm: AsyncLLM,
        tool_call_parser: str | None = None,
        reasoning_parser: str | None = None,
        chat_template: str | None = None,
        generation_defaults: Mapping[str, float | int] | None = None,
    ) -> None:
        super().__init__(llm)
        self._adapter: LoRARequest | None = None
        # Priorities are vLLM's only under scheduling_policy "priority" (elsewhere it refuses any but 0): then batch
        # lines (the request context's priority 1) wait behind interactive requests.
        self._by_priority = llm.vllm_config.scheduler_config.policy == "priority"
        self._defaults = checked_defaults(llm.model_config, generation_defaults)
        self._chat = ChatTemplate(self._tokens, chat_template)
        self._images = ModelImages(llm, chat_template)
        self._parsers = ModelParsers(self._tokens.tokenizer, tool_call_parser, reasoning_parser)
        self._steps = StepReader(self._tokens.decode_now)
        renders_tools = self._chat.renders_tools()
        if not renders_tools:
            logger.info("the chat template ignores tools: tools go in a system preamble")
        self.capabilities = ModelCapabilities(
            tool_parser=self._parsers.native_tools,
            reasoning_parser=self._parsers.reasoning,
            renders_tools=renders_tools,
            sampling_defaults=self._defaults,
            max_images=self._images.limit,
        )

    def with_adapter(self, adapter: LoRARequest) -> VLLMGenerator:
        """This model answering through ``adapter`` (loaded with ``add_adapter`` first); the view owns nothing."""
        view = copy.copy(self)
        view._adapter = adapter
        return view

    async def add_adapter(self, adapter: LoRARequest) -> None:
        """Load ``adapter`` into the engine (vLLM reads and checks its files; its errors are raised as they come)."""
        await self._llm.add_lora(adapter)

    def shutdown(self) -> None:
        if self._adapter is None:  # an adapter's view shares its base's engine: the base shuts it down
            super().shutdown()

    async def render_chat(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None = None,
        template_kwargs: dict[str, Any] | None = None,
        images: Sequence[ImageInput] = (),
    ) -> RenderedPrompt:
        if images:
            return await self._images.render(messages, tools, template_kwargs, images)
        return RenderedPrompt(await self._tokens.off_loop(self._chat.render, messages, tools, template_kwargs))

    async def decode(self, token_ids: Sequence[int]) -> str:
        return await self._tokens.decode(token_ids)

    def output_reader(
        self,
        tools: list[dict[str, Any]] | None,
        tool_choice: str | dict[str, Any],
        prompt_token_ids: Sequence[int],
    ) -> OutputReader:
        return self._parsers.reader(tools, tool_choice, prompt_token_ids)

    def count_reasoning_tokens(self, token_ids: Sequence[int]) -> int:
        return self._parsers.count_reasoning_tokens(token_ids)

    async def generate(
        self, prompt_token_ids: list[int], options: SamplingOptions, request_id: str, media: Any = None
    ) -> AsyncGenerator[GenerationStep, None]:
        """Stream deltas. Closing or cancelling this generator closes vLLM's explicitly (``aclosing``), which
        aborts the request in the engine. ``media``: the renderer's processed input of a prompt with images."""
        from vllm.inputs import TokensPrompt
        from vllm.v1.engine.exceptions import EngineDeadError

        params = sampling_params(options, self._defaults, self._parsers.skip_special_tokens(options.parsed_tools))
        prompt = media if media is not None else TokensPrompt(prompt_token_ids=prompt_token_ids)
        try:
            priority = current().priority if self._by_priority else 0
            generated = self._llm.generate(prompt, params, request_id, lora_request=self._adapter, priority=priority)
            async with contextlib.aclosing(generated) as outputs:
                async for output in outputs:
                    yield self._steps.step(output, prompt_token_ids, options.logprobs)
        except EngineDeadError as exc:
            raise self._unavailable(exc) from exc
        except (EngineUnavailableError, EngineFailedError):
            raise  # ours, from the step reader
        except Exception as exc:
            error = translate(exc, options.structured)
            if isinstance(error, EngineFailedError):  # vLLM may have registered the request before failing
                await self._llm.abort(request_id)
            raise error from exc
