"""The route tail every generating endpoint shares: start the run, then stream it or collect it, and close it.

An endpoint supplies only its ``Wire``: how a piece becomes chunks, what opens and ends a stream (chat's usage
trailer, the Responses lifecycle events and its store write), and the finished object. Whatever ends the response
(done, an error, a client gone before the first byte), the run is closed and its engine requests aborted.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Iterable
from typing import Any, Generic, Protocol, TypeVar

from pydantic import BaseModel
from starlette.responses import Response

from openai_routes.pipeline.run import GenerationRun, Piece
from openai_routes.protocol.common import CompletionUsage
from openai_routes.server.sse import DATA_LINES, Event, Framing, sse_response

Whole = TypeVar("Whole", bound=BaseModel, covariant=True)


class Wire(Protocol, Generic[Whole]):
    """One endpoint's wire shape for a run's output."""

    @property
    def framing(self) -> Framing:
        """How the stream's events go on the wire."""
        ...

    def opening(self) -> Iterable[Event]:
        """What a stream sends before the first piece."""
        ...

    def chunks(self, piece: Piece) -> Iterable[Event]:
        """A piece as the stream's chunks (none while a reader holds text back)."""
        ...

    def take(self, piece: Piece) -> None:
        """A piece of a collected run (a wire that builds its answer from the finished choices ignores it)."""
        ...

    async def closing(self) -> Iterable[Event]:
        """What a stream sends after the last piece (the run is whole then)."""
        ...

    async def whole(self) -> Whole:
        """The finished answer of a collected run."""
        ...


async def answer(run: GenerationRun, wire: Wire[Whole], stream: bool) -> Whole | Response:
    """Answer ``run`` through ``wire``: as an SSE stream (once its engine requests have started, so refusals are
    plain HTTP errors), or as one object once it has finished."""
    if not stream:
        return await collect(run, wire)
    await run.start()
    return sse_response(events(run, wire), close=run.aclose, framing=wire.framing)


async def collect(run: GenerationRun, wire: Wire[Whole]) -> Whole:
    """Run to the end and return the finished object (a request's answer, or a background response's)."""
    try:
        await run.start()
        async for piece in run.pieces():
            wire.take(piece)
        return await wire.whole()
    finally:
        await run.aclose()


async def events(run: GenerationRun, wire: Wire[Whole]) -> AsyncGenerator[Event, None]:
    for event in wire.opening():
        yield event
    async for piece in run.pieces():
        for event in wire.chunks(piece):
            yield event
    for event in await wire.closing():
        yield event


class DataLinesWire:
    """What chat's and completions' wires share: ``data:`` lines ending with ``[DONE]``, nothing before the first
    chunk, answers read from the finished choices, and with ``stream_options.include_usage`` a last chunk that
    carries the usage and no choice. A subclass sets ``request``, ``run`` and ``chunk(choices, usage)``."""

    framing = DATA_LINES
    request: Any
    run: GenerationRun

    def chunk(self, choices: list[Any], usage: CompletionUsage | None = None) -> BaseModel:
        raise NotImplementedError

    def opening(self) -> Iterable[Event]:
        return ()

    def take(self, piece: Piece) -> None:
        pass  # the answer is read from the finished choices

    async def closing(self) -> Iterable[Event]:
        return (self.chunk([], CompletionUsage.of(self.run.counts())),) if self.request.include_usage else ()
