"""One ``/v1/responses`` generation: the choice's output events (``pipeline.choice``) as Responses output items, and
those items as OpenAI's stream events or as the finished ``response`` object.

Streamed or not, the items come from the same events in the same order: a message for answer text, a reasoning
item for reasoning, a function call per tool call. An item opens when its first event comes and closes when
another kind starts or the output ends, so a stream's items and the final object's are the same, ids included.
Whitespace between the answer and a call is held until it is known to be part of an answer.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import pydantic_core
from pydantic import BaseModel

from openai_routes.core.engine import OutputEvent
from openai_routes.core.errors import APIError
from openai_routes.endpoints.responses.items import (
    FunctionToolCall,
    ItemStatus,
    OutputItem,
    OutputMessage,
    OutputReasoning,
    OutputText,
    ReasoningText,
)
from openai_routes.endpoints.responses.objects import IncompleteDetails, Response, ResponseUsage
from openai_routes.pipeline.choice import ChoiceOutput
from openai_routes.pipeline.input_items import new_id
from openai_routes.pipeline.run import GenerationRun, Piece
from openai_routes.server.sse import Event, Framing


class OpenItem:
    """The output item being written: its place in ``output``, its text so far."""

    def __init__(self, item: OutputItem, index: int) -> None:
        self.item = item
        self.index = index
        self.text: list[str] = []
        self.call_index = -1  # the choice's tool call this item is (function calls only)


Emit = Callable[[str, dict[str, Any]], None]  # an event's type and fields (the sequence number is added)


class ResponseItems:
    """Output events in, Responses items out, each change announced through ``emit`` (a no-op when not streaming)."""

    def __init__(self, choice: ChoiceOutput, emit: Emit) -> None:
        self.choice = choice
        self.emit = emit
        self.items: list[OutputItem] = []
        self.open: OpenItem | None = None
        self.space: list[str] = []  # whitespace not yet known to be answer text

    def feed(self, events: list[OutputEvent]) -> None:
        for event in events:
            if event.kind == "text":
                self.text(event.text)
            elif event.kind == "reasoning":
                self.reasoning(event.text)
            elif event.kind == "call":
                self.close()
                self.space.clear()
                self.call(event)
            elif self.open is not None and self.open.call_index == event.index:
                self.open.text.append(event.text)
                self.emit("response.function_call_arguments.delta", {**place(self.open), "delta": event.text})

    def start(self, item: OutputItem) -> OpenItem:
        self.close()
        self.open = OpenItem(item, len(self.items))
        self.items.append(item)
        self.emit("response.output_item.added", {"output_index": self.open.index, "item": dump(item)})
        return self.open

    def text(self, text: str, hold: bool = True) -> None:
        if self.open is None or not isinstance(self.open.item, OutputMessage):
            if hold and not text.strip():
                self.space.append(text)
                return
            opened = self.start(OutputMessage(id=new_id("msg"), status="in_progress", content=[]))
            self.emit("response.content_part.added", {**place(opened, True), "part": dump(OutputText(text=""))})
        assert self.open is not None
        text, self.space = "".join(self.space) + text, []
        self.open.text.append(text)
        self.emit("response.output_text.delta", {**place(self.open, True), "delta": text, "logprobs": []})

    def reasoning(self, text: str) -> None:
        if self.open is None or not isinstance(self.open.item, OutputReasoning):
            self.start(OutputReasoning(id=new_id("rs"), status="in_progress", content=[]))
        assert self.open is not None
        self.open.text.append(text)
        self.emit("response.reasoning_text.delta", {**place(self.open, True), "delta": text})

    def call(self, event: OutputEvent) -> None:
        call_id = self.choice.ids[event.index]
        item = FunctionToolCall(id=new_id("fc"), call_id=call_id, name=event.text, arguments="", status="in_progress")
        self.start(item).call_index = event.index

    def close(self, status: ItemStatus = "completed") -> None:
        """Finish the open item: its full text, its status, and the events that say so."""
        opened, self.open = self.open, None
        if opened is None:
            return
        text, item = "".join(opened.text), opened.item
        if isinstance(item, OutputMessage):
            item.content = [OutputText(text=text)]
            self.emit("response.output_text.done", {**place(opened, True), "text": text, "logprobs": []})
            self.emit("response.content_part.done", {**place(opened, True), "part": dump(item.content[0])})
        elif isinstance(item, OutputReasoning):
            item.content = [ReasoningText(text=text)]
            self.emit("response.reasoning_text.done", {**place(opened, True), "text": text})
        else:
            item.arguments = text
            self.emit("response.function_call_arguments.done", {**place(opened), "name": item.name, "arguments": text})
        item.status = status
        self.emit("response.output_item.done", {"output_index": opened.index, "item": dump(item)})

    def finish(self) -> None:
        """The output ended: whitespace left is the answer only when nothing else was said."""
        if self.space and not self.items:
            self.text("", hold=False)
        self.close("incomplete" if self.choice.finish_reason == "length" else "completed")


def place(opened: OpenItem, content: bool = False) -> dict[str, Any]:
    """Where an event's item is: its id and output index (and its content index, for a part's events)."""
    where: dict[str, Any] = {"item_id": opened.item.id, "output_index": opened.index}
    return {**where, "content_index": 0} if content else where


def as_bytes(event: Event) -> bytes:
    assert isinstance(event, bytes), "a Responses stream yields framed events"
    return event


def dump(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(mode="json")


class ResponseWire:
    """One response's wire (``endpoints.answer.Wire``): the run's single choice as Responses items, streamed as SSE
    events (``event:`` lines, ``sequence_number`` from 0) or read whole; both end with the finished ``response``
    object in ``self.response``, handed to ``finished`` (the store's write) before the terminal event, so a client
    that chains on the response as soon as it has it finds it stored."""

    def __init__(self, response: Response, run: GenerationRun, finished: Callable[[Response], Awaitable[None]]) -> None:
        self.response = response
        self.run = run
        self.finished = finished
        self.choice = run.choices[0]
        self.sequence = 0
        self.pending: list[bytes] = []
        self.streaming = False
        self.items = ResponseItems(self.choice, self.emit)

    def emit(self, kind: str, fields: dict[str, Any]) -> None:
        if self.streaming:
            self.pending.append(self.event(kind, fields))

    def event(self, kind: str, fields: dict[str, Any]) -> bytes:
        payload = pydantic_core.to_json({"type": kind, **fields, "sequence_number": self.sequence})
        self.sequence += 1
        return b"event: " + kind.encode() + b"\ndata: " + payload + b"\n\n"

    def lifecycle(self, kind: str) -> bytes:
        return self.event(kind, {"response": self.response.model_dump(mode="json")})

    async def finish(self) -> Response:
        """The items closed and the response finished (status, usage), then stored through ``finished``."""
        self.items.finish()
        cut = self.choice.finish_reason == "length"
        counts = self.run.counts()
        self.response = self.response.model_copy(
            update={
                "status": "incomplete" if cut else "completed",
                "completed_at": None if cut else int(time.time()),
                "incomplete_details": IncompleteDetails(reason="max_output_tokens") if cut else None,
                "output": self.items.items,
                "usage": ResponseUsage.of(counts),
            }
        )
        await self.finished(self.response)
        return self.response

    def opening(self) -> Iterable[bytes]:
        self.streaming = True
        self.response = self.response.model_copy(update={"status": "in_progress"})
        return (self.lifecycle("response.created"), self.lifecycle("response.in_progress"))

    def take(self, piece: Piece) -> None:
        self.items.feed(piece.events)

    def chunks(self, piece: Piece) -> Iterable[bytes]:
        self.items.feed(piece.events)
        if not self.pending:
            return ()
        events, self.pending = self.pending, []
        return (b"".join(events),)

    async def closing(self) -> Iterable[bytes]:
        response = await self.finish()
        events, self.pending = self.pending, []
        return (b"".join(events) + self.lifecycle(f"response.{response.status}"),)

    async def whole(self) -> Response:
        return await self.finish()

    @property
    def framing(self) -> Framing:
        """The stream's events are framed here (``event:`` lines, sequence numbers); no end marker."""
        return Framing(frame=as_bytes, error=self.error_event, end=b"")

    def error_event(self, error: APIError) -> bytes:
        """A failure after the stream began: OpenAI's ``error`` event (with the envelope the SDK raises from)."""
        body = error.body()["error"]
        fields = {"code": body["code"], "message": body["message"], "param": body["param"], "error": body}
        return self.event("error", fields)
