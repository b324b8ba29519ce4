"""What a response's prompt is made of, and how its input is kept.

The prompt is a chat conversation: the request's ``instructions`` as a system message, then every earlier turn of
the ``previous_response_id`` chain (each one's input items and output items, oldest first; their instructions are
not carried over, as OpenAI does), then the new input. Output items read back as input items, since clients send
``response.output`` back as they got it: a message is an assistant turn, function calls join the assistant turn
they follow, a function call's output is a ``tool`` message, and reasoning is left out (vLLM does the same).

Input items are stored in OpenAI's ``input_items`` shape, each with an id.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from pydantic import TypeAdapter

from openai_routes.core.errors import bad_request
from openai_routes.protocol.chat import ImagePart
from openai_routes.protocol.items import (
    FunctionCallItem,
    FunctionCallOutputItem,
    InputImagePart,
    InputItem,
    MessageItem,
)

ITEMS: TypeAdapter[list[InputItem]] = TypeAdapter(list[InputItem])


def message_content(item: MessageItem, index: int | None) -> str | list[Any]:
    """A message item's content as chat's: its text, or with images a list of text and image parts, each image
    naming its place in ``input`` (``index`` is the item's; None for an earlier response's item)."""
    if not item.has_images:
        return item.text()
    parts: list[Any] = []
    for j, part in enumerate(item.content):
        if isinstance(part, InputImagePart):
            field = "image_url" if part.image_url is not None else "file_id"
            param = f"input[{index}].content[{j}].{field}" if index is not None else "input"
            parts.append(ImagePart.of(part.image_url, part.file_id, part.detail, param))
        else:
            parts.append({"type": "text", "text": part.content})
    return parts


def chat_messages(items: Iterable[InputItem], first: int | None = None) -> list[dict[str, Any]]:
    """Input items as chat messages (the shape ``ChatCompletionRequest.messages`` takes); ``first`` is the first
    item's index in the request's ``input`` (negative or None: it comes from earlier responses)."""
    messages: list[dict[str, Any]] = []
    for k, item in enumerate(items):
        if isinstance(item, MessageItem):
            index = first + k if first is not None and first + k >= 0 else None
            messages.append({"role": item.role, "content": message_content(item, index)})
        elif isinstance(item, FunctionCallItem):
            call = {
                "id": item.call_id,
                "type": "function",
                "function": {"name": item.name, "arguments": item.arguments},
            }
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif isinstance(item, FunctionCallOutputItem):
            messages.append({"role": "tool", "tool_call_id": item.call_id, "content": item.text()})
    return messages


def prompt_messages(
    instructions: str | None, history: Sequence[dict[str, Any]], items: Iterable[InputItem], first: int | None = None
) -> list[dict[str, Any]]:
    """``first``: the index in the request's ``input`` of ``items``' first (see ``chat_messages``)."""
    system = [{"role": "system", "content": instructions}] if instructions else []
    messages = [*system, *chat_messages(ITEMS.validate_python(list(history))), *chat_messages(items, first)]
    if not messages:  # reasoning items are left out: alone they leave nothing to answer
        raise bad_request("Invalid value for 'input': it has no message for the model to answer.", param="input")
    return messages


def stored_item(item: InputItem) -> dict[str, Any]:
    """One input item as ``GET /v1/responses/{id}/input_items`` lists it."""
    if isinstance(item, MessageItem):
        part: dict[str, Any] = {"type": "input_text", "text": item.text()}
        if item.role == "assistant":  # as the response's own output reads
            part = {"type": "output_text", "text": item.text(), "annotations": [], "logprobs": []}
        parts = [part]
        if item.has_images:  # in their places, as OpenAI lists them
            parts = [p.stored() if isinstance(p, InputImagePart) else {"type": "input_text", "text": p.content}
                     for p in item.content]  # fmt: skip
        return {"type": "message", "id": new_id("msg"), "role": item.role, "status": "completed", "content": parts}
    if isinstance(item, FunctionCallItem):
        return {"type": "function_call", "id": new_id("fc"), "call_id": item.call_id, "name": item.name,
                "arguments": item.arguments, "status": "completed"}  # fmt: skip
    if isinstance(item, FunctionCallOutputItem):
        return {"type": "function_call_output", "id": new_id("fco"), "call_id": item.call_id,
                "output": item.text(), "status": "completed"}  # fmt: skip
    return {"type": "reasoning", "id": new_id("rs"), "summary": []}


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"
