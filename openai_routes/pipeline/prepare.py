"""A request made ready for the engine: checked against the limits, its prompt rendered and tokenized, its output
planned (formats, tool calls) and its sampling options built.

Chat and the Responses API (which runs as a chat request and names its own fields in errors) share
``prepare_chat``; ``/tokenize`` counts messages with the same ``render_messages``; completions turn each prompt
into token ids with ``prompt_input``, as ``/tokenize`` does. A conversation's images are checked, loaded and
decoded by ``pipeline.images`` in ``render_messages``, after the request's other checks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from openai_routes.core.engine import GenerateEngine, RenderedPrompt
from openai_routes.core.errors import bad_request
from openai_routes.core.limits import Limits, check_request, completion_budget
from openai_routes.pipeline import tool_format
from openai_routes.pipeline.constraints import plan_output
from openai_routes.pipeline.images import MediaAccess, check_images, find_images, load_images
from openai_routes.pipeline.run import EngineInput, Reading
from openai_routes.protocol.chat import ChatCompletionRequest, ChatMessage
from openai_routes.protocol.tools import ChatCompletionTool


async def render_messages(
    engine: GenerateEngine,
    messages: Sequence[ChatMessage],
    tools: Sequence[ChatCompletionTool] | None,
    template_kwargs: dict[str, Any] | None = None,
    media: MediaAccess | None = None,
    input_param: str = "messages",
) -> RenderedPrompt:
    """A conversation's prompt: messages as chat templates expect them, tools as JSON objects, images (checked
    against the model and ``media``'s limits, then loaded) in their places. A model whose template ignores tools gets
    them in a system preamble (``tool_format``), so it sees them all the same."""
    media = media or MediaAccess()
    found = find_images(messages, input_param)
    check_images(found, engine.capabilities, media.limits)
    images = await load_images(found, media) if found else []
    tool_dicts = [tool.model_dump(exclude_none=True) for tool in tools or []]
    conversation = [message.template_dict() for message in messages]
    if tools and not engine.capabilities.renders_tools:
        conversation, tool_dicts = tool_format.with_preamble(conversation, tools), []
    return await engine.render_chat(conversation, tool_dicts or None, template_kwargs, images)


@dataclass(frozen=True)
class PreparedChat:
    """A chat request made ready for the engine: its prompt and sampling options, and how its choices are read."""

    input: EngineInput
    reading: Reading


async def prepare_chat(
    request: ChatCompletionRequest,
    engine: GenerateEngine,
    limits: Limits,
    *,
    max_tokens_param: str | None = None,
    input_param: str = "messages",
    media: MediaAccess | None = None,
) -> PreparedChat:
    """Check, render and plan a chat request (errors name ``max_tokens_param`` and ``input_param``: the Responses
    API runs as a chat request and names its own fields). ``media``: how its images are reached."""
    if max_tokens_param is None:
        max_tokens_param = "max_completion_tokens" if request.max_completion_tokens is not None else "max_tokens"
    check_request(
        limits,
        n=request.n,
        max_tokens=request.requested_max_tokens,
        messages=len(request.messages),
        max_tokens_param=max_tokens_param,
    )
    prompt = await render_messages(
        engine, request.messages, request.tools, request.chat_template_kwargs, media, input_param
    )
    prompt_ids = prompt.token_ids
    tools = [tool.model_dump(exclude_none=True) for tool in request.tools or []]  # for the model's parsers
    max_tokens = completion_budget(
        limits,
        prompt_tokens=len(prompt_ids),
        requested=request.requested_max_tokens,
        max_model_len=engine.max_model_len,
        param=input_param,
    )
    plan = plan_output(request, engine.capabilities.tool_parser)
    options = replace(
        request.sampling_options(max_tokens, request.engine_logprobs),
        structured=plan.structured,
        parsed_tools=tools if plan.tool_choice != "none" else None,
    )
    reading = Reading(
        tools=tools,
        tool_choice=plan.tool_choice,
        single_call=not request.parallel_tool_calls,
        with_reasoning=request.include_reasoning,
    )
    return PreparedChat(EngineInput(prompt_ids, options, prompt.media), reading)


@dataclass(frozen=True)
class PromptText:
    """A completion prompt: its token ids, its text (echoed) and its first token's text (vLLM gives that token no
    logprob entry)."""

    token_ids: list[int]
    text: str
    first_token: str


async def prompt_input(engine: GenerateEngine, prompt: str | list[int]) -> PromptText:
    """A completion prompt (text or token ids) as the engine takes it; an empty one is a 400."""
    token_ids = await engine.tokenize(prompt) if isinstance(prompt, str) else list(prompt)
    if not token_ids:
        raise bad_request("The prompt must not be empty.", "prompt")
    text = prompt if isinstance(prompt, str) else await engine.decode(token_ids)
    return PromptText(token_ids, text, await engine.decode(token_ids[:1]))
