"""The loop guard for tool calls: a choice that repeats one of its own calls ends there.

A small model free to call in parallel (``tool_choice: "required"``, ``parallel_tool_calls`` left on) may call the
same tool with the same arguments until ``max_tokens`` cuts it off, and a cut-off answer has no calls at all. So,
within one choice, a call identical to an earlier one (same name, same arguments compared as parsed JSON, so spacing
and key order do not count) ends the choice: the repeat is dropped, the choice finishes with its calls
(``tool_calls``), and the run stops its engine request (``run.GenerationRun``).

A call is known to be a repeat only once it is complete, after its first events would have been sent. The first
call of a choice passes as it comes; each later call's events are held until the call is complete (its arguments
parse as a JSON object, or anything else comes, or the output ends), then released, or dropped if it is a repeat. A
stream and a whole answer read the same events through the same guard, so they agree.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from openai_routes.core.engine import OutputEvent


def signature(name: str, arguments: str) -> str | None:
    """A call's name and arguments in one canonical form; None for arguments that are no JSON (never a repeat)."""
    try:
        parsed = json.loads(arguments)
    except ValueError:
        return None
    return json.dumps([name, parsed], sort_keys=True, separators=(",", ":"))


def complete(arguments: str) -> bool:
    """Arguments that parse as a JSON object are whole: no proper prefix of an object's text parses."""
    try:
        return isinstance(json.loads(arguments), dict)
    except ValueError:
        return False


@dataclass
class CallGuard:
    """One choice's calls: the events of the calls it passed, a later call's events held until it is complete, and
    whether a repeat ended the choice (``ended``: every event after it is dropped)."""

    calls: dict[int, list[str]] = field(default_factory=dict)  # a passed call's index -> [name, argument pieces...]
    held: list[OutputEvent] = field(default_factory=list)  # a later call's events, its "call" event first
    ended: bool = False

    def read(self, events: list[OutputEvent], finished: bool) -> list[OutputEvent]:
        """The events that may go on: a held call is released once complete; a repeat ends the choice."""
        passed: list[OutputEvent] = []
        for event in events:
            if self.held and not (event.kind == "arguments" and event.index == self.held[0].index):
                passed += self.settle()  # something else came: the held call is complete
            if self.ended:
                return passed
            if event.kind == "call" and self.calls:
                self.held = [event]
            elif self.held:
                self.held.append(event)
                if complete("".join(piece.text for piece in self.held[1:])):
                    passed += self.settle()
            else:
                passed.append(self.note(event))
        if finished and self.held:
            passed += self.settle()
        return passed

    def note(self, event: OutputEvent) -> OutputEvent:
        if event.kind == "call":
            self.calls[event.index] = [event.text]
        elif event.kind == "arguments" and event.index in self.calls:
            self.calls[event.index].append(event.text)
        return event

    def settle(self) -> list[OutputEvent]:
        """The held call is complete: its events if it is new; none, and the choice ended, if it is a repeat."""
        held, self.held = self.held, []
        mine = signature(held[0].text, "".join(event.text for event in held[1:]))
        earlier = {signature(pieces[0], "".join(pieces[1:])) for pieces in self.calls.values()}
        if mine is not None and mine in earlier:
            self.ended = True
            return []
        return [self.note(event) for event in held]
