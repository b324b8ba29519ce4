"""The output pipeline every generating endpoint shares: one choice's engine deltas counted and read into events.

A ``ChoiceOutput`` takes a choice's deltas from the engine. It counts tokens and keeps logprobs and the finish
reason. Its reader (the model's parsers, through ``engine.output_reader``) turns the text into events: answer
text, reasoning, the start of a tool call, a piece of its arguments. An endpoint streams the events in its own wire
shape as they come (chat chunks, completion chunks, Responses events) or reads the finished choice as one
``AssistantOutput``; it never parses output itself. ``run.GenerationRun`` makes one per choice. A choice with
nothing to parse (no tools, no reasoning parser) has no reader: its text is its events. A choice's calls pass its
``call_guard.CallGuard``: a repeat of an earlier call ends the choice (``ended``), finished with its calls.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Literal

from openai_routes.core.engine import OutputDelta, OutputEvent, OutputReader, TokenLogprob
from openai_routes.pipeline.call_guard import CallGuard

Finish = Literal["stop", "length", "tool_calls"]


def call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


@dataclass(frozen=True)
class Call:
    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class AssistantOutput:
    """A finished choice: its answer, its reasoning, its tool calls, and why it ended."""

    content: str | None
    reasoning: str | None
    calls: list[Call]
    finish_reason: Finish


@dataclass
class ChoiceOutput:
    """One choice: its deltas in, its events out, and the whole of it once finished. With ``single_call``
    (``parallel_tool_calls: false``), events of any call after the first are dropped."""

    reader: OutputReader | None = None
    single_call: bool = False
    with_reasoning: bool = True  # false: reasoning is read apart but not returned (vLLM's include_reasoning)
    token_ids: list[int] | None = None  # kept only for a model whose reasoning tokens are counted
    text: list[str] = field(default_factory=list)  # the raw output a reader read (without one, it is the content)
    tokens: int = 0
    logprobs: list[TokenLogprob] | None = None
    finish_reason: Literal["stop", "length"] | None = None
    content: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    ids: dict[int, str] = field(default_factory=dict)  # a call's index -> its id
    names: dict[int, str] = field(default_factory=dict)
    arguments: dict[int, list[str]] = field(default_factory=dict)
    guard: CallGuard = field(default_factory=CallGuard)

    def feed(self, delta: OutputDelta) -> list[OutputEvent]:
        """Count a delta and read it: the events it completes (the reader may hold text until the next one)."""
        self.tokens += len(delta.token_ids)
        if self.token_ids is not None:
            self.token_ids.extend(delta.token_ids)
        if delta.logprobs is not None:
            self.logprobs = self.logprobs or []
            self.logprobs.extend(delta.logprobs)
        self.finish_reason = delta.finish_reason or self.finish_reason
        if self.reader is None:
            events = [OutputEvent("text", delta.text)] if delta.text else []
        else:
            self.text.append(delta.text)
            events = self.reader.feed(delta.text, delta.token_ids, delta.finish_reason is not None)
        return self.record(events, delta.finish_reason is not None)

    def record(self, events: list[OutputEvent], finished: bool) -> list[OutputEvent]:
        """Drop the events the request does not want (later calls, reasoning left out, a repeated call and all after
        it); note the rest. A repeat ends the choice as if the model had stopped there."""
        kept = self.guard.read(
            [
                event
                for event in events
                if not (self.single_call and event.kind in ("call", "arguments") and event.index > 0)
                and (self.with_reasoning or event.kind != "reasoning")
            ],
            finished,
        )
        if self.guard.ended:
            self.finish_reason = "stop"
        for event in kept:
            if event.kind == "text":
                self.content.append(event.text)
            elif event.kind == "reasoning":
                self.reasoning.append(event.text)
            elif event.kind == "call":
                self.ids[event.index] = call_id()
                self.names[event.index] = event.text
                self.arguments[event.index] = []
            else:
                self.arguments.setdefault(event.index, []).append(event.text)
        return kept

    @property
    def ended(self) -> bool:
        """A repeated call ended the choice before the engine did: what its engine request still makes is not read."""
        return self.guard.ended

    @property
    def called(self) -> bool:
        return bool(self.names)

    @property
    def stream_finish(self) -> Finish:
        """The finish reason a streamed choice ends with (its calls are already sent)."""
        assert self.finish_reason is not None
        return "tool_calls" if self.called and self.finish_reason != "length" else self.finish_reason

    def output(self) -> AssistantOutput:
        """The finished choice as one answer. Calls whose arguments are not JSON (cut off by ``max_tokens``) are no
        calls: the raw output is the answer then, as it was generated."""
        assert self.finish_reason is not None
        reasoning = "".join(self.reasoning) or None
        calls = [Call(self.ids[i], self.names[i], "".join(self.arguments.get(i, []))) for i in sorted(self.names)]
        if calls and (self.finish_reason == "length" or not all(parses(call.arguments) for call in calls)):
            return AssistantOutput("".join(self.text), reasoning, [], self.finish_reason)
        content = "".join(self.content)
        if calls:
            return AssistantOutput(content if content.strip() else None, reasoning, calls, "tool_calls")
        return AssistantOutput(content, reasoning, [], self.finish_reason)


def parses(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True
