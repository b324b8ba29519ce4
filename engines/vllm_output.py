"""A choice's output read by vLLM's own parsers: reasoning, answer text and tool calls, as ``vllm serve`` reads them.

vLLM's unified ``Parser`` (``vllm.parser``) composes the model's reasoning parser and tool-call parser; the serving
layer holds one per choice and calls ``parse_delta`` per streamed delta. We call it for every output, streamed or
not, so an answer has the same calls, byte for byte, whichever way it is asked for (vLLM's whole-output ``parse``
re-serializes ``required`` arguments, its streaming path does not). A model
without a tool-call parser of its own calls in the generic format (``openai_routes.pipeline.tool_format``), which vLLM's
``hermes`` parser reads. The kind of call (``auto``, ``required``, a named tool, ``none``) comes from the request, as
in vLLM: ``required`` is a JSON array of ``{"name", "parameters"}``, a named call's output is its arguments.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from openai_routes.core.engine import OutputEvent
from openai_routes.pipeline import tool_format

logger = logging.getLogger(__name__)
PROBE_TOOL = {"type": "function", "function": {"name": "probe", "parameters": {"type": "object", "properties": {}}}}


class ModelParsers:
    """What one model parses in its output, resolved once when it loads: the ``Parser`` class for its tool-call and
    reasoning parsers, and whether requests with tools keep special tokens (the parser's own request adjustment)."""

    def __init__(self, tokenizer: Any, tool_call_parser: str | None, reasoning_parser: str | None) -> None:
        from vllm.parser.parser_manager import ParserManager

        self.tokenizer = tokenizer
        self.native_tools = tool_call_parser is not None
        self.reasoning = reasoning_parser is not None
        parser_class = ParserManager.get_parser(
            tool_parser_name=tool_call_parser or tool_format.PARSER,
            reasoning_parser_name=reasoning_parser,
            enable_auto_tools=True,
            tokenizer=tokenizer,
        )
        assert parser_class is not None  # a tool parser is always named
        self.parser_class = parser_class
        self.counter = parser_class(tokenizer, None)  # counting reasoning tokens keeps no state
        request = self.vllm_request([PROBE_TOOL], "auto")
        adjusted = parser_class(tokenizer, request.tools).adjust_request(request)
        self.skip_special_tokens_with_tools = bool(adjusted.skip_special_tokens)

    @staticmethod
    def vllm_request(tools: list[dict[str, Any]] | None, tool_choice: str | dict[str, Any]) -> Any:
        """vLLM's own request object, which its parsers read (``tools``, ``tool_choice``)."""
        from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest

        fields: dict[str, Any] = {"model": "-", "messages": [], "tool_choice": tool_choice if tools else "none"}
        if tools:
            fields["tools"] = tools
        return ChatCompletionRequest.model_validate(fields)

    def skip_special_tokens(self, tools: list[dict[str, Any]] | None) -> bool:
        """Special tokens stay in outputs the tool parser reads (Hermes's ``<tool_call>`` is special in some
        vocabularies); otherwise they are skipped, as vLLM does by default."""
        return self.skip_special_tokens_with_tools if tools else True

    def reader(
        self,
        tools: list[dict[str, Any]] | None,
        tool_choice: str | dict[str, Any],
        prompt_token_ids: Sequence[int],
    ) -> ParsedOutput:
        request = self.vllm_request(tools, tool_choice)
        parser = self.parser_class(self.tokenizer, request.tools)
        if parser.tool_parser is not None:
            # Our grammars write `required` and named calls in vLLM's JSON form (openai_routes/tool_calls.py) on
            # every model; a parser with an xgrammar tag of its own would otherwise look for its native format.
            parser.tool_parser.supports_required_and_named = True
        return ParsedOutput(parser, request, list(prompt_token_ids))

    def count_reasoning_tokens(self, token_ids: Sequence[int]) -> int:
        """The reasoning parser's count (vLLM's ``count_reasoning_tokens``: the tokens of the reasoning span)."""
        try:
            return int(self.counter.count_reasoning_tokens(list(token_ids)))
        except Exception as exc:  # a count is not worth failing an answer for
            logger.warning("the reasoning parser could not count reasoning tokens (%s)", type(exc).__name__)
            return 0


class ParsedOutput:
    """One choice read by a vLLM ``Parser``, delta by delta (cheap per delta, as in ``vllm serve``: on the loop)."""

    def __init__(self, parser: Any, request: Any, prompt_token_ids: list[int]) -> None:
        self.parser = parser
        self.request = request
        self.prompt_token_ids: list[int] | None = prompt_token_ids

    def feed(self, text: str, token_ids: Sequence[int], finished: bool) -> list[OutputEvent]:
        prompt, self.prompt_token_ids = self.prompt_token_ids, None  # the parser reads the prompt once
        try:
            delta = self.parser.parse_delta(text, list(token_ids), self.request, prompt, finished=finished)
        except Exception as exc:  # a parser bug must not lose the output: pass the text on as it came
            logger.warning("the output parser failed on a delta (%s); passing it on as text", type(exc).__name__)
            return [OutputEvent("text", text)] if text else []
        return [] if delta is None else delta_events(delta)


def delta_events(delta: Any) -> list[OutputEvent]:
    """vLLM's ``DeltaMessage`` as events: reasoning, text, then each call's name and argument piece."""
    events = [OutputEvent("reasoning", delta.reasoning)] if delta.reasoning else []
    if delta.content:
        events.append(OutputEvent("text", delta.content))
    for call in delta.tool_calls:
        if call.function is None:
            continue
        if call.function.name:
            events.append(OutputEvent("call", call.function.name, call.index))
        if call.function.arguments:
            events.append(OutputEvent("arguments", call.function.arguments, call.index))
    return events
