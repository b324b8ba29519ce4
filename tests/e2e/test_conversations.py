"""Conversations on the real service through the official SDK (``client.conversations``): the objects, item pages,
responses that read and extend a conversation (plain, streamed, background), the input token count, privacy by key;
and the OpenAI Agents SDK keeping an agent's memory in a conversation (``OpenAIConversationsSession``, and
``Runner.run(conversation_id=...)``, where the server appends each turn)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from agents import Agent, ModelSettings, OpenAIConversationsSession, OpenAIResponsesModel, Runner, set_tracing_disabled

from tests.e2e.conftest import CHAT_MODEL
from tests.e2e.server import Server

CAPITAL = "What is the capital of France?"
FOLLOW_UP = "And of Germany?"


@pytest.fixture(scope="module", autouse=True)
def no_tracing() -> Iterator[None]:
    set_tracing_disabled(True)
    yield
    set_tracing_disabled(False)


def texts(items: list[Any]) -> list[tuple[str, str]]:
    """``(role, text)`` of each message item (SDK objects or dicts)."""
    found = []
    for item in items:
        item = item if isinstance(item, dict) else item.model_dump()
        if item.get("type") == "message":
            found.append((item["role"], "".join(part.get("text", "") for part in item["content"])))
    return found


def test_conversation_objects_through_the_sdk(client: openai.OpenAI, other_client: openai.OpenAI) -> None:
    made = client.conversations.create(
        items=[{"type": "message", "role": "user", "content": "Hello!"}], metadata={"topic": "greetings"}
    )
    assert made.id.startswith("conv_") and made.object == "conversation" and made.metadata == {"topic": "greetings"}
    assert abs(made.created_at - time.time()) < 600
    assert client.conversations.retrieve(made.id) == made
    assert client.conversations.update(made.id, metadata={"topic": "other"}).metadata == {"topic": "other"}
    added = client.conversations.items.create(
        made.id,
        items=[{"type": "message", "role": "assistant", "content": f"Reply {i}"} for i in range(3)],
    )
    assert [item.type for item in added.data] == ["message"] * 3 and not added.has_more
    every = list(client.conversations.items.list(made.id, order="asc", limit=2))  # the SDK follows the cursor
    assert texts(every) == [("user", "Hello!")] + [("assistant", f"Reply {i}") for i in range(3)]
    page = client.conversations.items.list(made.id, limit=2)
    assert page.has_more and [item.id for item in page.data] == [every[3].id, every[2].id]  # desc by default
    second = str(every[1].id)
    assert client.conversations.items.retrieve(second, conversation_id=made.id) == every[1]
    assert client.conversations.items.delete(second, conversation_id=made.id).id == made.id
    assert len(list(client.conversations.items.list(made.id))) == 3
    with pytest.raises(openai.NotFoundError):
        client.conversations.items.retrieve(second, conversation_id=made.id)
    for call in (
        lambda: other_client.conversations.retrieve(made.id),
        lambda: other_client.conversations.items.list(made.id),
        lambda: other_client.conversations.delete(made.id),
        lambda: other_client.responses.create(model=CHAT_MODEL, input="Hi", conversation=made.id),
    ):
        with pytest.raises(openai.NotFoundError):
            call()
    deleted = client.conversations.delete(made.id)
    assert (deleted.id, deleted.deleted, deleted.object) == (made.id, True, "conversation.deleted")
    with pytest.raises(openai.NotFoundError):
        client.conversations.retrieve(made.id)


def test_responses_read_and_extend_the_conversation(client: openai.OpenAI) -> None:
    made = client.conversations.create(items=[{"type": "message", "role": "user", "content": "Answer briefly."}])
    first = client.responses.create(model=CHAT_MODEL, input=CAPITAL, conversation=made.id, temperature=0)
    assert first.status == "completed" and first.conversation is not None and first.conversation.id == made.id
    assert "paris" in first.output_text.lower()
    counted = client.responses.input_tokens.count(model=CHAT_MODEL, input="And Germany?", conversation=made.id)
    with client.responses.stream(
        model=CHAT_MODEL, input="And Germany?", conversation={"id": made.id}, temperature=0
    ) as stream:
        second = stream.get_final_response()
    assert first.usage is not None and second.usage is not None
    assert counted.input_tokens == second.usage.input_tokens > first.usage.input_tokens
    background = client.responses.create(
        model=CHAT_MODEL, input="And Italy?", conversation=made.id, background=True, max_output_tokens=32
    )
    for _ in range(240):
        background = client.responses.retrieve(background.id)
        if background.status not in ("queued", "in_progress"):
            break
        time.sleep(0.5)
    assert background.status in ("completed", "incomplete")
    every = list(client.conversations.items.list(made.id, order="asc", limit=100))
    assert [role for role, _ in texts(every)] == ["user", "user", "assistant", "user", "assistant", "user", "assistant"]
    assert texts(every)[1:3] == [("user", CAPITAL), ("assistant", first.output_text)]
    assert [item.id for item in every[2:3]] == [first.output[0].id]
    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.create(model=CHAT_MODEL, input="Hi", conversation=made.id, previous_response_id=first.id)
    assert refused.value.param == "conversation"


@pytest.fixture
def aclient_of(server: Server) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{server.base_url}/v1", api_key=server.api_key, max_retries=0, timeout=120)


def agent(client: openai.AsyncOpenAI) -> Agent[Any]:
    return Agent(
        name="geo",
        instructions="Answer in one sentence.",  # the 135M model rambles to max_tokens under some instructions
        model=OpenAIResponsesModel(model=CHAT_MODEL, openai_client=client),
        model_settings=ModelSettings(temperature=0, max_tokens=200),
    )


async def test_agents_sdk_session_remembers_the_first_turn(aclient_of: openai.AsyncOpenAI, http: httpx.Client) -> None:
    session = OpenAIConversationsSession(openai_client=aclient_of)
    first = await Runner.run(agent(aclient_of), CAPITAL, session=session)
    second = await Runner.run(agent(aclient_of), FOLLOW_UP, session=session)
    assert isinstance(first.final_output, str) and isinstance(second.final_output, str)
    held = texts(await session.get_items())
    assert held == [
        ("user", CAPITAL),
        ("assistant", first.final_output),
        ("user", FOLLOW_UP),
        ("assistant", second.final_output),
    ]
    assert "berlin" in second.final_output.lower()  # "And of Germany?" alone is read as the German language
    # The second turn's request carried the first turn: the session's items went in as its input.
    response_id = second.raw_responses[0].response_id
    sent = http.get(f"/v1/responses/{response_id}/input_items", params={"order": "asc"}).json()["data"]
    assert texts(sent) == held[:3]


async def test_agents_sdk_runs_on_a_server_side_conversation(aclient_of: openai.AsyncOpenAI) -> None:
    made = await aclient_of.conversations.create()
    first = await Runner.run(agent(aclient_of), CAPITAL, conversation_id=made.id)
    second = await Runner.run(agent(aclient_of), FOLLOW_UP, conversation_id=made.id)
    items = [item async for item in aclient_of.conversations.items.list(made.id, order="asc")]
    assert texts(items) == [
        ("user", CAPITAL),
        ("assistant", first.final_output),
        ("user", FOLLOW_UP),
        ("assistant", second.final_output),
    ]
    assert "paris" in str(first.final_output).lower() and "berlin" in str(second.final_output).lower()
