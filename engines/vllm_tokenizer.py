"""A model's tokenizer and chat template: tokenize, decode and render a conversation, off the event loop.

Templating and tokenizing take milliseconds for long inputs: they run on a thread of their own, not on the event
loop that streams every other request's tokens. One thread, as vLLM does: HF tokenizers are not re-entrant.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from openai_routes.core.engine import EngineInputError

T = TypeVar("T")
PROBE_TOOL_NAME = "bento_oai_probe_tool"


class ModelTokenizer:
    """The tokenizer of one model and the one thread that uses it."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.vocab_size = len(tokenizer)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tokenizer")

    async def off_loop(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``function(*args, **kwargs)`` on the tokenizer's thread."""
        return await asyncio.get_running_loop().run_in_executor(
            self._pool, functools.partial(function, *args, **kwargs)
        )

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=add_special_tokens))

    async def tokenize(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return await self.off_loop(self.encode, text, add_special_tokens)

    def decode_now(self, token_ids: Sequence[int]) -> str:
        """The text of ``token_ids`` on the caller's thread (an ``EngineInputError`` for ids outside the vocabulary)."""
        if any(not 0 <= tid < self.vocab_size for tid in token_ids):
            raise EngineInputError(f"Token ids must be in [0, {self.vocab_size}).", "prompt")
        return str(self.tokenizer.decode(list(token_ids)))

    async def decode(self, token_ids: Sequence[int]) -> str:
        return await self.off_loop(self.decode_now, token_ids)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class ChatTemplate:
    """A generating model's chat template (the config's file, or the tokenizer's own when ``template`` is None)."""

    def __init__(self, tokens: ModelTokenizer, template: str | None = None) -> None:
        self._tokens = tokens
        self._template = template

    def text(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None, kwargs: dict[str, Any] | None
    ) -> str:
        conversation: Any = messages
        text = self._tokens.tokenizer.apply_chat_template(
            conversation,
            tools=tools,
            chat_template=self._template,
            tokenize=False,
            add_generation_prompt=True,
            **(kwargs or {}),
        )
        return str(text)

    def render(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None, kwargs: dict[str, Any] | None
    ) -> list[int]:
        """The conversation's prompt tokens (run it off the loop: ``ModelTokenizer.off_loop``)."""
        try:
            text = self.text(messages, tools, kwargs)
        except Exception as exc:  # jinja2 raises its own errors for conversations the template rejects
            raise EngineInputError(f"The model's chat template rejected the messages: {exc}", "messages") from exc
        return self._tokens.encode(text, add_special_tokens=False)  # the template wrote them already

    def renders_tools(self) -> bool:
        """Whether the template writes the ``tools`` it is given into the prompt (probed once, at load)."""
        probe = {
            "type": "function",
            "function": {"name": PROBE_TOOL_NAME, "parameters": {"type": "object", "properties": {}}},
        }
        try:
            return PROBE_TOOL_NAME in self.text([{"role": "user", "content": "hi"}], [probe], None)
        except Exception:  # a template that refuses tools does not render them
            return False
