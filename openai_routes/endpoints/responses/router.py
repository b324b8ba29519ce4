"""The Responses API (https://platform.openai.com/docs/api-reference/responses):

- ``POST /v1/responses``: generate, as one ``response`` object, as a stream of typed events, or in the background
- ``GET /v1/responses/{id}``, ``DELETE /v1/responses/{id}``, ``GET /v1/responses/{id}/input_items``
- ``POST /v1/responses/{id}/cancel``: stop a background response
- ``POST /v1/responses/input_tokens``: the ``input_tokens`` a create with the same body would report, without a run

A response's context is its ``previous_response_id`` chain, or the items of its ``conversation`` (never both); a
response that names a conversation appends its input and output items to it when it completes (or ends
``incomplete``), not when it fails.

A response runs as a chat request (``ResponsesRequest.chat_request``, ``pipeline.prepare.prepare_chat``): the same
rendering, limits, formats and tool calls, the same ``pipeline.run.GenerationRun``, read into Responses items
(``wire.py``). Stored responses, their chains and background runs are ``book.py``'s; every lookup is scoped to
the caller's key.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, Literal

from fastapi import APIRouter, Request
from starlette.responses import Response as HTTPResponse

from openai_routes.core.context import current
from openai_routes.core.engine import GenerateEngine
from openai_routes.core.errors import APIError, as_api_error
from openai_routes.core.limits import Limits, MediaLimits
from openai_routes.core.registry import ModelRegistry
from openai_routes.endpoints.answer import answer, collect
from openai_routes.endpoints.conversation_state import add_items, conversation_items
from openai_routes.endpoints.lists import NewestFirst, page_of
from openai_routes.endpoints.responses.objects import (
    DeletedResponse,
    InputTokenCount,
    Reasoning,
    Response,
    ResponseError,
)
from openai_routes.endpoints.responses.protocol import ResponsesRequest
from openai_routes.endpoints.responses.truncation import fitted
from openai_routes.endpoints.responses.wire import ResponseWire
from openai_routes.pipeline.images import FileReader, MediaAccess
from openai_routes.pipeline.input_items import ITEMS, new_id, prompt_messages, stored_item
from openai_routes.pipeline.prepare import PreparedChat, prepare_chat
from openai_routes.pipeline.run import GenerationRun, RunSettings
from openai_routes.protocol.common import ObjectList
from openai_routes.server.admission import SLOT_KEY, Slot
from openai_routes.server.auth import key_owner
from openai_routes.server.json_body import StrictJSONRoute
from openai_routes.store import ResponseRecord
from openai_routes.store.book import ResponseBook

Runs = Callable[[str], GenerationRun]  # a response id -> the run of its generation


def initial_response(
    request: ResponsesRequest, status: Literal["queued", "in_progress"], defaults: Mapping[str, Any]
) -> Response:
    """The response object before any output: the request's settings echoed, and the sampling values it runs with
    (``defaults``: the model's), as OpenAI does."""
    used = request.sampling_used(defaults)
    return Response(
        id=new_id("resp"),
        created_at=int(time.time()),
        status=status,
        background=request.background,
        instructions=request.instructions,
        max_output_tokens=request.max_output_tokens,
        max_tool_calls=request.max_tool_calls,
        model=request.model,
        parallel_tool_calls=request.parallel_tool_calls,
        previous_response_id=request.previous_response_id,
        conversation={"id": request.conversation_id} if request.conversation_id else None,
        store=request.store,
        temperature=used["temperature"],
        top_p=used["top_p"],
        presence_penalty=used["presence_penalty"],
        frequency_penalty=used["frequency_penalty"],
        top_logprobs=request.top_logprobs or 0,
        text=request.text.wire(),
        tool_choice=request.tool_choice_wire,
        tools=[tool.echo() for tool in request.tools],
        truncation=request.truncation,
        reasoning=Reasoning.model_validate(request.reasoning.model_dump()) if request.reasoning else None,
        user=request.user,
        safety_identifier=request.safety_identifier,
        prompt_cache_key=request.prompt_cache_key,
        metadata=request.metadata or {},
    )


class ResponseJob:
    """One POST: its record (when stored) and its generation, run in the request or in the background."""

    def __init__(
        self, book: ResponseBook, owner: str, request: ResponsesRequest, runs: Runs, defaults: Mapping[str, Any]
    ) -> None:
        self.book = book
        self.request = request
        status: Literal["queued", "in_progress"] = "queued" if request.background else "in_progress"
        response = initial_response(request, status, defaults)
        self.run = runs(response.id)
        self.wire = ResponseWire(response, self.run, self.finish_record if request.background else self.save)
        self.record = ResponseRecord(
            id=response.id,
            owner=owner,
            created_at=response.created_at,
            status=status,
            response=response.model_dump(mode="json"),
            input_items=[stored_item(item) for item in request.input],
            previous_response_id=request.previous_response_id,
        )

    def recorded(self, response: Response) -> ResponseRecord:
        return ResponseRecord(
            **{**vars(self.record), "status": response.status, "response": response.model_dump(mode="json")}
        )

    async def save(self, response: Response) -> None:
        if self.request.store:
            await self.book.save(self.recorded(response))
        await self.extend_conversation(response)

    async def finish_record(self, response: Response) -> None:
        await self.book.finish(self.recorded(response))
        await self.extend_conversation(response)

    async def extend_conversation(self, response: Response) -> None:
        """A finished response's input and output join its conversation (a failed one adds nothing)."""
        conversation = self.request.conversation_id
        if conversation and response.status in ("completed", "incomplete"):
            output = [item.model_dump(mode="json") for item in response.output]
            await add_items(self.book.state, conversation, self.record.owner, [*self.record.input_items, *output],
                            param="conversation")  # fmt: skip

    async def background(self, slot: Slot) -> None:
        """The run of a background response: queued until its admission slot is granted, in progress, then
        finished, failed or cancelled in its record."""
        try:
            await self.run.deadline.wait(slot.acquire())  # the request's deadline covers its wait in the queue
            self.wire.response = self.wire.response.model_copy(update={"status": "in_progress"})
            await self.finish_record(self.wire.response)
            await collect(self.run, self.wire)
        except APIError as exc:
            await self.book.finish(self.failed(exc))
        except Exception as exc:  # logged with the request id by as_api_error; the record says what it can
            await self.book.finish(self.failed(as_api_error(exc)))
        except BaseException:
            await self.book.stopped(self.recorded(self.wire.response))
            raise
        finally:
            await self.run.aclose()

    def failed(self, error: APIError) -> ResponseRecord:
        update = {"status": "failed", "error": ResponseError.of(error.code or error.type, error.message)}
        return self.recorded(self.wire.response.model_copy(update=update))


def file_reader(book: ResponseBook, owner: str) -> FileReader:
    """``owner``'s files of ``/v1/files`` as ``input_image`` parts read them by ``file_id`` (another key's file is
    no file: ``LookupError``; a file over the image byte cap is a ``ValueError``)."""

    async def read(file_id: str, max_bytes: int) -> bytes:
        found = await book.state.files.get(file_id, owner)
        if found is None:
            raise LookupError(file_id)
        if found.bytes > max_bytes:
            raise ValueError(f"The file is larger than {max_bytes} bytes, the most one image may take.")
        return b"".join([chunk async for chunk in book.state.files.content(file_id, owner)])

    return read


def create_router(
    registry: ModelRegistry,
    limits: Limits,
    runs: RunSettings,
    book: ResponseBook,
    media: MediaLimits | None = None,
) -> APIRouter:
    router = APIRouter(route_class=StrictJSONRoute)
    media_limits = media or MediaLimits()

    async def prepare(request: ResponsesRequest, owner: str) -> tuple[str, GenerateEngine, PreparedChat]:
        """The request as the chat request it runs as: its chain's history, instructions, input and tools."""
        served, engine = registry.generator(request.model)
        current().model = served.id
        history: list[dict[str, Any]] = []
        if request.previous_response_id:
            history = await book.history(request.previous_response_id, owner)
        elif request.conversation_id:
            history = await conversation_items(book.state, request.conversation_id, owner, param="conversation")
        items = [*ITEMS.validate_python(history), *request.input]
        access = MediaAccess(media_limits, file_reader(book, owner))  # one per request: images load once

        async def without(dropped: int) -> PreparedChat:  # the oldest ``dropped`` items left out (truncation.py)
            messages = prompt_messages(request.instructions, [], items[dropped:], dropped - len(history))
            chat = request.chat_request(messages)
            return await prepare_chat(
                chat, engine, limits, max_tokens_param="max_output_tokens", input_param="input", media=access
            )

        prepared = await fitted(without, items, request.truncation == "auto")
        return served.id, engine, prepared

    @router.post("/responses/input_tokens")
    async def count_input_tokens(request: ResponsesRequest, http: Request) -> InputTokenCount:
        _, _, prepared = await prepare(request, key_owner(http.scope))
        return InputTokenCount(input_tokens=len(prepared.input.prompt_ids))

    @router.post("/responses", response_model=None)
    async def create_response(request: ResponsesRequest, http: Request) -> Response | HTTPResponse:
        owner = key_owner(http.scope)
        model, engine, prepared = await prepare(request, owner)
        job = ResponseJob(
            book,
            owner,
            request,
            lambda id: GenerationRun(engine, model, [prepared.input], prepared.reading, id, runs),
            engine.capabilities.sampling_defaults,
        )
        if request.background:
            await book.save(job.record)
            slot: Slot = http.scope[SLOT_KEY]
            release = slot.take_over()  # the run waits for the request's admission slot and holds it until it ends
            run = book.run_in_background(job.record, job.background(slot))
            run.add_done_callback(lambda _: release())
            return job.wire.response
        return await answer(job.run, job.wire, request.stream)

    @router.get("/responses/{response_id}", response_model=None)
    async def get_response(response_id: str, http: Request) -> dict[str, Any]:
        return (await book.find(response_id, key_owner(http.scope))).response

    @router.delete("/responses/{response_id}")
    async def delete_response(response_id: str, http: Request) -> DeletedResponse:
        owner = key_owner(http.scope)
        await book.find(response_id, owner)
        if response_id in book.runs:
            await book.cancel(response_id, owner)
        await book.store.delete(response_id, owner)
        return DeletedResponse(id=response_id)

    @router.post("/responses/{response_id}/cancel", response_model=None)
    async def cancel_response(response_id: str, http: Request) -> dict[str, Any]:
        return (await book.cancel(response_id, key_owner(http.scope))).response

    @router.get("/responses/{response_id}/input_items")
    async def list_input_items(
        response_id: str,
        http: Request,
        query: NewestFirst,
    ) -> ObjectList:
        return page_of((await book.find(response_id, key_owner(http.scope))).input_items, query, "response")

    return router
