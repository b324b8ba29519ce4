"""A prompt with images, rendered as vLLM's OpenAI server renders one: ``ModelImages``.

The routes give the conversation with ``{"type": "image"}`` parts and the decoded images (``ImageInput``) in their
order. Each part becomes vLLM's ``image_pil`` part, and the engine's renderer (``AsyncLLM.renderer``) does the rest
as ``vllm serve`` does: its chat utils put the model's image placeholder where the template wants it (in the
content list for templates that read parts, before the text for those that read a string), the chat template is
applied, and the model's multi-modal processor expands each placeholder into the image's tokens. The processed
input is what ``generate`` submits, so the image is processed once, and its token ids are the prompt's true size.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from openai_routes.core.engine import EngineInputError, ImageInput, RenderedPrompt

if TYPE_CHECKING:
    from vllm.v1.engine.async_llm import AsyncLLM

logger = logging.getLogger(__name__)


def image_limit(llm: AsyncLLM) -> int:
    """Images one prompt may hold: vLLM's ``limit_mm_per_prompt`` for images; 0 for a model that reads none."""
    model_config = llm.model_config
    if not model_config.is_multimodal_model or model_config.multimodal_config is None:
        return 0
    return int(model_config.multimodal_config.get_limit_per_prompt("image"))


def with_images(messages: list[dict[str, Any]], images: Sequence[ImageInput]) -> list[dict[str, Any]]:
    """The messages with each ``{"type": "image"}`` part replaced by vLLM's ``image_pil`` part, in order."""
    remaining = iter(images)
    out = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            content = [
                {"type": "image_pil", "image_pil": next(remaining).image} if part.get("type") == "image" else part
                for part in content
            ]
        out.append({**message, "content": content})
    return out


class ModelImages:
    """Renders prompts with images for one model (its chat template: the config's, or the tokenizer's)."""

    def __init__(self, llm: AsyncLLM, template: str | None) -> None:
        self._llm = llm
        self._template = template
        self.limit = image_limit(llm)

    async def render(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None,
        kwargs: dict[str, Any] | None,
        images: Sequence[ImageInput],
    ) -> RenderedPrompt:
        from vllm.renderers.params import ChatParams

        params = ChatParams(
            chat_template=self._template,
            chat_template_kwargs={**(kwargs or {}), "tools": tools, "add_generation_prompt": True},
        )
        try:
            conversation: Any = with_images(messages, images)  # vLLM's message TypedDicts, as its server passes
            _, prompts = await self._llm.renderer.render_chat_async([conversation], params)
        except EngineInputError:
            raise
        except Exception as exc:  # the processor's and the template's refusals: the request's images or messages
            logger.info("a prompt with images was refused: %s", type(exc).__name__)
            raise EngineInputError(f"The model could not read the images: {first_line(exc)}", images[0].param) from exc
        engine_input = prompts[0]
        return RenderedPrompt(list(engine_input["prompt_token_ids"]), engine_input)


def first_line(exc: Exception) -> str:
    """An exception's message, its first line only (no stack or file paths)."""
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__
