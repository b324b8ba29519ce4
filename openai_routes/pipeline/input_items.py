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
from openai_routes.protocol.items import FunctionCallItem, FunctionCallOutputItem, InputItem, MessageItem

ITEMS: TypeAdapter[list[InputItem]] = TypeAdapter(list[InputItem])


def chat_messages(items: Iterable[InputItem]) -> list[dict[str, Any]]:
    """Input items as chat messages (the shape ``ChatCompletionRequest.messages`` takes)."""
    messages: list[dict[str, Any]] = []
    for item in items:
        if isinstance(item, MessageItem):
            messages.append({"role": item.role, "content": item.text()})
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
    instructions: str | None, history: Sequence[dict[str, Any]], items: Iterable[InputItem]
) -> list[dict[str, Any]]:
    system = [{"role": "system", "content": instructions}] if instructions else []
    messages = [*system, *chat_messages(ITEMS.validate_python(list(history))), *chat_messages(items)]
    if not messages:  # reasoning items are left out: alone they leave nothing to answer
        raise bad_request("Invalid value for 'input': it has no message for the model to answer.", param="input")
    return messages


def stored_item(item: InputItem) -> dict[str, Any]:
    """One input item as ``GET /v1/responses/{id}/input_items`` lists it."""
    if isinstance(item, MessageItem):
        part: dict[str, Any] = {"type": "input_text", "text": item.text()}
        if item.role == "assistant":  # as the response's own output reads
            part = {"type": "output_text", "text": item.text(), "annotations": [], "logprobs": []}
        return {"type": "message", "id": new_id("msg"), "role": item.role, "status": "completed", "content": [part]}
    if isinstance(item, FunctionCallItem):
        return {"type": "function_call", "id": new_id("fc"), "call_id": item.call_id, "name": item.name,
                "arguments": item.arguments, "status": "completed"}  # fmt: skip
    if isinstance(item, FunctionCallOutputItem):
        return {"type": "function_call_output", "id": new_id("fco"), "call_id": item.call_id,
                "output": item.text(), "status": "completed"}  # fmt: skip
    return {"type": "reasoning", "id": new_id("rs"), "summary": []}


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"
